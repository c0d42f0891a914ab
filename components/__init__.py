"""KFP components: one lightweight component per pipeline step, each a thin adapter over ``mdctr.steps``.

Every component runs in the project image (``mdctr.image_ref()``, immutable per commit), installs nothing at start, imports its step
inside its body (the body is what KFP ships to the container), passes artifact paths and logs metadata.
"""
