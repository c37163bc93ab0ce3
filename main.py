"""Cloud Functions entry points. Decode, delegate, nothing else: the work is in functions/."""

import os

import functions_framework
from cloudevents.http import CloudEvent

from functions.app_endpoints.app import cancel_incoming_call, send_incoming_call
from functions.app_endpoints.callable_protocol import HttpReply, HttpRequest
from functions.notifier.app import handle_cloud_event, warm_in_background

# functions-framework's gunicorn imports this module, then forks its worker: build the clients
# in the worker as soon as it exists, not on the first call.
os.register_at_fork(after_in_child=warm_in_background)


@functions_framework.cloud_event
def on_call_event(cloud_event: CloudEvent) -> None:
    """Pub/Sub call event -> pushes. Raise = retry (transient); return = acknowledge."""
    handle_cloud_event(cloud_event)


# The app's own endpoints, under the names and protocols its code calls (docs/app-endpoints.md).
@functions_framework.http
def cancelIncomingCallNotification(request: HttpRequest) -> HttpReply:
    """Firebase callable: the signed-in user stopped the call on one device."""
    return cancel_incoming_call(request)


@functions_framework.http
def sendIncomingCallNotification(request: HttpRequest) -> HttpReply:
    """HTTPS: the app in DCMIWS mode asks for the user's other devices to ring."""
    return send_incoming_call(request)
