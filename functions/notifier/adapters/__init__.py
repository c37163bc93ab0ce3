"""The notifier's adapters: FCM sending, the recipient directory, the delivery ledger and call
history in Firestore, and the background event loop the clients run on."""
