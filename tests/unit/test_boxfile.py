"""`.boxforge.yml` parsing: service ports are TCP ports, one service each; errors name the field."""

from __future__ import annotations

import pytest

from server.boxfile import parse_boxfile
from server.errors import InvalidInput


def test_a_service_may_declare_its_port() -> None:
    recipe = parse_boxfile("services:\n  - {name: web, command: npm start, port: 3000}\n  - redis-server\n")
    assert [(s.name, s.port) for s in recipe.services] == [("web", 3000), ("service-2", None)]


@pytest.mark.parametrize("port", [0, 65536, -1, "http"])
def test_a_port_that_is_no_tcp_port_is_refused_naming_the_field(port: object) -> None:
    with pytest.raises(InvalidInput, match=r"services\.0\.port"):
        parse_boxfile(f"services:\n  - {{name: web, command: x, port: {port}}}\n")


def test_two_services_on_one_port_are_refused() -> None:
    with pytest.raises(InvalidInput, match="same port"):
        parse_boxfile("services:\n  - {name: a, command: x, port: 80}\n  - {name: b, command: y, port: 80}\n")
