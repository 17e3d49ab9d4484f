# ruff: noqa  (a `litestar db run` script: top-level await, and the shell's names are predefined)
"""Create the example's tables on their binds and add a few notes, in one `litestar db run` transaction.

litestar --app examples.app:app db run --file examples/seed.py
"""

from plugin.schema import create_all

await create_all(plugin.engines, plugin.router)  # notes/tags on the app bind, audit_log on logs

if not await session.scalar(select(func.count()).select_from(Note)):
    for title, body, tags in [
        ("Buy milk", "2 litres, semi-skimmed", ["errands"]),
        ("Read SQLAlchemy 2.1 notes", "binds, sessions, routing", ["reading", "work"]),
        ("Call the plumber", "", ["home"]),
    ]:
        note = Note(title=title, body=body)
        session.add(note)
        await session.flush()
        session.add_all([Tag(note_id=note.id, name=name) for name in tags])
        session.add(AuditEntry(action="created", note_title=title))  # routed to the logs database

await session.scalar(select(func.count()).select_from(Note))
