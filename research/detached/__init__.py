"""Runs that outlive the terminal (tools/launch.py): a run or a sweep in a tmux session (launch.py) and, with
--keep-alive, its supervisor (supervise.py), the supervised runs (registry.py), the boot entry (boot_entry.py),
--boot/--list/--forget (keep_alive.py) and the user's notify command (notify.py)."""
