"""Small helpers every command line of the project shares: user errors, exit codes, atomic files."""
