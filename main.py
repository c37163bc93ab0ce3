"""Cloud Functions entry points. Decode, delegate, nothing else: the work is in functions/."""

import functions_framework
from cloudevents.http import CloudEvent

from functions.notifier.app import handle_cloud_event


@functions_framework.cloud_event
def on_call_event(cloud_event: CloudEvent) -> None:
    """Pub/Sub call event -> pushes. Raise = retry (transient); return = acknowledge."""
    handle_cloud_event(cloud_event)
