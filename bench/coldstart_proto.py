"""The cold-start benchmark's prototype notifier: main.py's `on_call_event`, with
bench.prototypes.messaging_service_without_httpx_client applied before main.py is imported (so in
gunicorn's master, inherited by the worker it forks).

    functions-framework --source bench/coldstart_proto.py --target on_call_event \
        --signature-type cloudevent
"""

from bench.prototypes import messaging_service_without_httpx_client

messaging_service_without_httpx_client()

from main import on_call_event  # noqa: E402, F401
