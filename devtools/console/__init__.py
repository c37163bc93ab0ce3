"""The live local console (`make dev`: http://127.0.0.1:8075/, `DEV_CONSOLE_PORT`): relays, recent
calls with their lifecycle, each push as the phone shows it, and the admin doctor's findings.

`view` (pure: documents -> what the page shows), `sources` (Firestore emulator, local FCM
endpoint, doctor), `server` (aiohttp: the page, `/api/state`, Server-Sent Events at `/events`),
`static/` (the page: plain HTML, CSS and JS, no build step).
"""
