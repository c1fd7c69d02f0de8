"""One sync run (run.py), its planning decisions (plan.py), the clients (clients.py), pairs run (pairs.py)."""
