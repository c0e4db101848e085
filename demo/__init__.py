"""`make demo`: a scripted scenario against the running stack (`python -m demo`).

`demo.scenario` drives Privacy Plane through a person's life (sign-up, opt-out, GPC, export,
closure, legal hold and erasure); `demo.owners` plays the data owners, which are other services
in real life and no part of Privacy Plane.
"""
