"""The web UI's connections table shows the client's connection name (user_provided_name)
as text, in Debian's Chromium like tests/integration/test_ui.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pika
import pytest

from tests.integration.test_ui import CHROMIUM, CHROMIUM_ARGS
from warren.embed import ThreadedNode, run_node


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0) as running:
        yield running


def test_connections_table_shows_and_filters_the_client_name(node: ThreadedNode) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (scripts/debian-packages.txt)"
    name = "<b>orders</b> worker"  # markup in a client's name must show as text
    named = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, client_properties={"connection_name": name}))
    plain = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(str(node.http_url) + "/")
            page.fill("#login-user", "guest")
            page.fill("#login-pass", "guest")
            page.click("#login-submit")
            page.click("a[href='#/connections']")
            rows = page.locator("#connections-table tbody tr")
            expect(rows).to_have_count(2, timeout=10_000)
            expect(page.locator("#connections-table th[data-key='user_provided_name']")).to_have_text("Client name")
            expect(rows.filter(has_text=name)).to_have_count(1)
            expect(page.locator("#connections-table b")).to_have_count(0)
            page.fill("[data-filter='user_provided_name']", "orders")
            expect(rows).to_have_count(1, timeout=10_000)
            browser.close()
    finally:
        named.close()
        plain.close()
