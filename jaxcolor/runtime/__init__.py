"""How a process starts: the jobs' command line, platforms, hosts, host memory."""
