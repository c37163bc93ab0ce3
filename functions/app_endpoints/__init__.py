"""The app's own call endpoints, served by this backend: cancelIncomingCallNotification (a
Firebase callable) and sendIncomingCallNotification (HTTPS). docs/app-endpoints.md."""
