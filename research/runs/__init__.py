"""What starts and watches runs: detached runs in tmux, multi-machine jobs, their status, comparing them."""
