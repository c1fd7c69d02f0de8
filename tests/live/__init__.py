"""A real systemd host for the live tests: the box (`box.py`, `boot.sh`) and emag-sync
installed on it by deploy_sync_system.sh (`install.py`)."""
