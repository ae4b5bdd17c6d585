"""dtm-ray: a distributed transaction manager with a Byzantine-fault-tolerant coordinator."""
