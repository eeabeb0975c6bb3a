"""The sample nginx configuration in docs/deploy.md keeps one-time tokens out of its logs.

nginx's default access log records the whole request line; Bastion's one-time links carry
their token in the path or the query (ASVS 14.2.1, 16.2.5). The sample logs a path with the
token cut out and no query string, for every route of the app that takes a token.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Flask

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def nginx_sample() -> str:
    [block] = re.findall(r"```nginx\n(.*?)```", DEPLOY.read_text(), flags=re.DOTALL)
    return block


def test_every_server_block_logs_in_the_token_free_format() -> None:
    sample = nginx_sample()
    log_format = re.search(r"log_format bastion (.*?);", sample, flags=re.DOTALL)
    assert log_format is not None
    for variable in ("request", "request_uri", "uri", "args", "query_string", "http_referer"):
        assert not re.search(rf"\${variable}\b", log_format.group(1)), variable
    assert "$bastion_logged_path" in log_format.group(1)
    servers = sample.count("server {")
    assert servers == 2
    assert len(re.findall(r"^\s*access_log \S+ bastion;", sample, flags=re.MULTILINE)) == servers


def test_the_logged_path_hides_the_token_of_every_token_route(app: Flask) -> None:
    mapping = re.search(
        r"map \$uri \$bastion_logged_path \{\s*~(\S+)\s+\"([^\"]+)\";", nginx_sample()
    )
    assert mapping is not None
    pattern = re.compile(mapping.group(1).replace("(?<", "(?P<"))
    replacement = mapping.group(2).replace("${route}", r"\g<route>")
    token_rules = [rule for rule in app.url_map.iter_rules() if "token" in rule.arguments]
    assert len(token_rules) >= 5  # reset, confirm, unlock, email change, setup
    for rule in token_rules:
        path = rule.rule.replace("<token>", "SECRET-TOKEN")
        found = pattern.search(path)  # a map takes the whole value of the matching entry
        logged = found.expand(replacement) if found else path
        assert "SECRET-TOKEN" not in logged, rule.rule
        assert logged.endswith("<token>"), logged
