"""The embedding API and the pytest plugin, used the way a user's CI would."""

from __future__ import annotations

import aio_pika
import pika

from warren.embed import EmbeddedNode, ThreadedNode


async def test_async_context_manager_with_aio_pika() -> None:
    async with EmbeddedNode() as node:
        connection = await aio_pika.connect_robust(node.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue("aio", durable=True)
            await channel.default_exchange.publish(
                aio_pika.Message(b"hello", headers={"k": "v"}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="aio",
            )
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        assert message.body == b"hello"
                        assert message.headers == {"k": "v"}
                        break


def test_pytest_plugin_fixture_gives_a_working_broker(warren_broker: ThreadedNode) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(warren_broker.amqp_url))
    channel = conn.channel()
    channel.queue_declare("from-plugin")
    channel.basic_publish("", "from-plugin", b"ok")
    method, _, body = channel.basic_get("from-plugin", auto_ack=True)
    conn.close()
    assert body == b"ok"
