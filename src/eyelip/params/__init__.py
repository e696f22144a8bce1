"""``params.yaml``'s schema, split so that a stage depends on the schema of the sections it reads only:
:mod:`~eyelip.params.core` (reading, errors, the base models), one module per section, and
:mod:`~eyelip.params.whole` (the whole file, with the rules that join sections)."""
