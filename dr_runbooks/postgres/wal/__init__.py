"""Continuous WAL archiving: PostgreSQL's ``archive_command`` and ``restore_command``.

These modules run inside ``dr wal push``/``dr wal fetch``, which PostgreSQL starts once per WAL
file as the database server's OS user; they import nothing they do not need (the package itself
imports nothing).

==================  ==============================================================================
:mod:`.names`       WAL file names, LSNs, segment arithmetic, object keys
:mod:`.archive`     push and fetch one file (zstd, sha256 in the object's header), list an archive
:mod:`.spool`       asynchronous archiving: a spool and a pusher uploading several files at once
:mod:`.prefetch`    fetching ahead: a fetcher keeping the next segments downloaded and verified
:mod:`.stream`      ``pg_receivewal`` into a local directory, its segments pushed as they complete
==================  ==============================================================================
"""
