"""What the server profiles share, one module per concern; import the module you need.

policies (policy files), profile_options (options as a snapshot recorded them), programs
(finding and judging a server's programs), configrefs (what a config names, as an Inventory),
keychecks (private-key modes, host keys, X.509 certificates), authfiles (RFC 4716 keys,
password hashes, a smoke client key), configtext (directive lines read and rewritten), pamfiles
(PAM services), smokerun (ports, greetings, workspace, logs) and smoke_accounts (the users a
smoke run needs). The pinned SFTP and FTPS clients know no profile: drkit.engines.clients.
"""
