"""The connector's adapters: relay WebSockets, the address policy's resolver, leases, relay
status, Pub/Sub publishing, relay credentials from Secret Manager and the health server."""
