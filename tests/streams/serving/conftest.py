"""A published score version (tiny students over seeded pairs): what the serving tests answer from."""

from __future__ import annotations

import pytest

from models.runtime import Students
from streams.publishing.publisher import publish
from tests.student_fixtures import seed_pairs, tiny_students


@pytest.fixture
def published(storage, settings, tmp_path):
    data = seed_pairs(storage)
    first = tiny_students(storage, tmp_path, seed=0)
    result = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    return data, first, result
