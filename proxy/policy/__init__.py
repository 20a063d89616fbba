"""The data residency policy: loaded from YAML, decided in memory.

``loader`` reads a policy folder into a ``model.Policy`` (with ``yamlsource``
keeping every value's line for error messages, ``patterns`` reading resource
patterns and ``index`` finding a resource's dataset); ``engine.decide`` judges
a request against it; ``testing`` runs operators' policy tests and
``explain`` renders a decision's trace.
"""

from __future__ import annotations
