"""What a command does, as plain functions the CLI calls: validate, segment, export, benchmark, transfer and
the papers' analyses. Nothing here parses arguments."""
