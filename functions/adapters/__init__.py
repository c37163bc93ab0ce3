"""Adapters both services use: the PBX directory (pbx_tenants), relay_access records and
Firestore's precondition-write helpers. Each service's own adapters live beside it, in
functions/connector/adapters and functions/notifier/adapters."""
