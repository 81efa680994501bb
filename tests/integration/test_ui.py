"""The web UI end to end in Debian's Chromium (Playwright, no downloaded browsers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from warren.embed import ThreadedNode, run_node

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]



@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0) as running:
        yield running


def test_login_watch_queue_depth_get_message_and_screenshot(node: ThreadedNode, browser: object) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(str(node.http_url) + "/")

    # a wrong password is refused on the page
    page.fill("#login-user", "guest")
    page.fill("#login-pass", "nope")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Login failed")

    page.fill("#login-pass", "guest")
    page.click("#login-submit")
    expect(page.locator("#who")).to_contain_text("guest (administrator)")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#total-queues b")).to_be_visible()

    page.click("a[href='#/queues']")
    expect(page.locator("#queues-table")).to_be_visible()
    rows = page.locator("#queues-table tbody tr", has_text="ui-orders")
    expect(rows).to_have_count(0)

    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    channel = conn.channel()
    channel.queue_declare("ui-orders", durable=True)
    expect(rows).to_have_count(1, timeout=10_000)  # appears without reloading the page
    ready_cell = rows.locator("td").nth(5)
    expect(ready_cell).to_have_text("0")
    for i in range(7):
        channel.basic_publish("", "ui-orders", f"order {i}".encode())
    expect(ready_cell).to_have_text("7", timeout=10_000)

    # filter and sort the table
    channel.queue_declare("ui-other")
    page.fill("[data-filter='name']", "orders")
    expect(page.locator("#queues-table tbody tr")).to_have_count(1, timeout=10_000)
    page.fill("[data-filter='name']", "")
    expect(page.locator("#queues-table tbody tr")).to_have_count(2, timeout=10_000)
    page.click("#queues-table th[data-key='messages_ready']")
    page.click("#queues-table th[data-key='messages_ready']")  # descending: the fullest first
    expect(page.locator("#queues-table tbody tr").first).to_contain_text("ui-orders")

    # the queue page: get a message, publish one, purge
    rows.locator("a.queue-link").click()
    expect(page.locator("#queue-name")).to_have_text("ui-orders")
    page.click("#get-button")
    expect(page.locator("#got-messages pre.payload").first).to_have_text("order 0")
    expect(page.locator("#queue-total")).to_have_text("7")  # requeued: still there
    page.fill("#publish-form textarea[name=payload]", "from the page")
    page.click("#publish-button")
    expect(page.locator("#queue-total")).to_have_text("8", timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
    page.click("#purge-button")
    expect(page.locator("#queue-total")).to_have_text("0", timeout=10_000)
    method, _props, body = channel.basic_get("ui-orders")
    assert method is None

    # overview shows the publish rate; connections page closes the pika connection
    page.click("a[href='#/overview']")
    expect(page.locator("#rates-chart")).to_be_visible()
    page.click("a[href='#/connections']")
    expect(page.locator("#connections-table tbody tr")).to_have_count(1, timeout=10_000)
    page.click("#connections-table button.close-connection")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            conn.process_data_events(0.1)
    assert "Closed from the web UI" in closed.value.reply_text
    expect(page.locator("#connections-table tbody tr")).to_have_count(0, timeout=10_000)

    page.click("a[href='#/queues']")
    page.locator("#queues-table a.queue-link", has_text="ui-other").click()
    page.click("#delete-button")
    expect(page.locator("#queues-table tbody tr", has_text="ui-other")).to_have_count(0, timeout=10_000)
    page.close()


def test_every_page_live_rates_and_a_management_user_stays_logged_in(node: ThreadedNode, browser: object) -> None:
    from playwright.sync_api import expect

    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    channel = conn.channel()
    channel.queue_declare("ui-pages")
    channel.basic_qos(prefetch_count=3)
    channel.basic_consume("ui-pages", lambda *args: None, consumer_tag="ui-consumer")
    publisher = conn.channel()
    publisher.queue_declare("ui-rates")

    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(str(node.http_url) + "/")
    page.fill("#login-user", "guest")
    page.fill("#login-pass", "guest")
    page.click("#login-submit")
    expect(page.locator("#who")).to_contain_text("guest (administrator)")

    page.click("a[href='#/nodes']")
    expect(page.locator("#nodes-table tbody tr")).to_contain_text("warren@localhost")
    page.click("a[href='#/channels']")
    expect(page.locator("#channels-table tbody tr").first).to_be_visible(timeout=10_000)
    consumer_row = page.locator("#channels-table tbody tr", has=page.locator("td:nth-child(6)", has_text="1"))
    expect(consumer_row).to_have_count(1, timeout=10_000)
    expect(consumer_row.locator("td").nth(7)).to_have_text("3")  # its prefetch
    page.click("a[href='#/exchanges']")
    expect(page.locator("#exchanges-table")).to_contain_text("amq.topic")
    expect(page.locator("#exchanges-table")).to_contain_text("(AMQP default)")

    # the queue list shows the depth growing as a rate, live, while a client publishes
    page.click("a[href='#/queues']")
    rate_cell = page.locator("#queues-table tbody tr", has_text="ui-rates").locator("td").nth(8)
    expect(rate_cell).to_have_text("0.0/s", timeout=10_000)
    deadline = time.monotonic() + 20
    while rate_cell.inner_text() == "0.0/s" and time.monotonic() < deadline:
        for _ in range(20):
            publisher.basic_publish("", "ui-rates", b"tick")
        conn.process_data_events(0.2)
    assert float(rate_cell.inner_text().removesuffix("/s")) > 0

    # users, vhosts and policies are managed from their pages
    page.click("a[href='#/users']")
    page.fill("#add-user input[name=name]", "ui-mgr")
    page.fill("#add-user input[name=password]", "ui-pass")
    page.fill("#add-user input[name=tags]", "management")
    page.click("#add-user button[type=submit]")
    expect(page.locator("#users-table tbody tr", has_text="ui-mgr")).to_contain_text("management", timeout=10_000)
    page.click("a[href='#/vhosts']")
    page.fill("#add-vhost input[name=name]", "ui-vhost")
    page.click("#add-vhost button[type=submit]")
    expect(page.locator("#vhosts-table tbody tr", has_text="ui-vhost")).to_have_count(1, timeout=10_000)
    page.click("a[href='#/policies']")
    page.fill("#add-policy input[name=name]", "ui-cap")
    page.fill("#add-policy input[name=pattern]", "^ui-rates$")
    page.select_option("#add-policy select[name=applyto]", "queues")
    page.fill("#add-policy input[name=definition]", '{"max-length": 5}')
    page.click("#add-policy button[type=submit]")
    expect(page.locator("#policies-table tbody tr", has_text="ui-cap")).to_have_count(1, timeout=10_000)
    page.click("a[href='#/queues']")
    capped = page.locator("#queues-table tbody tr", has_text="ui-rates")
    expect(capped.locator("td").nth(4)).to_have_text("ui-cap", timeout=10_000)
    expect(capped.locator("td").nth(7)).to_have_text("5", timeout=10_000)  # the policy applied at once

    # a management user is refused the admin pages but stays logged in
    page.click("#logout")
    page.fill("#login-user", "ui-mgr")
    page.fill("#login-pass", "ui-pass")
    page.click("#login-submit")
    expect(page.locator("#who")).to_contain_text("ui-mgr (management)")
    page.click("a[href='#/users']")
    expect(page.locator("#status")).to_have_text("Not administrator user", timeout=10_000)
    expect(page.locator("#login")).to_be_hidden()
    page.click("a[href='#/queues']")
    expect(page.locator("#queues-table")).to_be_visible(timeout=10_000)
    expect(page.locator("#status")).to_have_text("")  # the refusal was about the other page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-management-user.png"), full_page=True)
    page.close()
    conn.close()
