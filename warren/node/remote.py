"""Forwarding for queues that live on another node (see ``warren.cluster.forwarding``).

Sans-I/O: the node hands peer messages in (``on_message``) and link changes
(``peer_down``/``peer_up``); this sends through ``send(node_name, message)``, a function
of the I/O layer. Two halves:

- the *access* side, for this node's clients: forwarded publishes and the confirms they
  wait for, remote consumers (their credit), calls waiting for an answer (consume, get,
  purge);
- the *home* side, for queues that live here: one :class:`Proxy` per remote session, whose
  consumers are ordinary consumers of the queue with a ref the proxy owns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warren.amqp.connection import decode_properties
from warren.broker.message import Message
from warren.broker.queue import Consumer, ConsumerRef
from warren.cluster.forwarding import Fwd, unavailable_text
from warren.errors import AMQPError, ReplyCode, not_found
from warren.session.methods import encoded_properties, message_body

if TYPE_CHECKING:
    from warren.node.node import Node

log = logging.getLogger("warren.forwarding")

Send = Callable[[str, dict[str, Any]], None]
Answer = Callable[[int, str, Any], None]  # (reply code, 0 = ok; text; value)


@dataclass
class RemoteConsumer:
    home: str
    vhost: str
    queue: str
    no_ack: bool = False


@dataclass
class Proxy:
    """A remote session's consumers and gets on this node's queues."""

    peer: str
    session: int
    ref_id: int
    credit: dict[int, int] = field(default_factory=dict)  # channel -> deliveries it may still get
    queues: dict[int, set[Any]] = field(default_factory=dict)  # channel -> queues consumed from


class Forwarder:
    def __init__(self, node: Node, send: Send, is_up: Callable[[str], bool], credit: int,
                 answer_timeout: float = 30.0, schedule_flush: Callable[[], None] | None = None) -> None:
        self.node = node
        # after a peer message: the node's output, once per loop iteration however many came
        self.schedule_flush = schedule_flush or node.flush
        self.send = send
        self.is_up = is_up
        self.credit = credit
        self.answer_timeout = answer_timeout  # a publish or call unanswered this long fails
        self._next = 1
        # access side
        self.publishes: dict[int, tuple[str, Callable[[bool], None]]] = {}  # token -> (home, outcome)
        self.calls: dict[int, tuple[str, Answer]] = {}
        self._deadlines: dict[int, float] = {}  # token -> when its publish or call fails
        self.consumers: dict[tuple[int, int, str], RemoteConsumer] = {}  # (session, channel, tag)
        self._owed: dict[tuple[str, int, int], int] = {}  # (home, session, channel) -> credit to hand back
        # home side
        self.proxies: dict[int, Proxy] = {}  # ref id -> proxy
        self._proxy_of: dict[tuple[str, int], int] = {}  # (peer, its session id) -> ref id
        # for metrics, by peer name: messages sent (publishes to a home, deliveries to a
        # remote consumer), publishes refused because their home was down
        self.sent: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def _token(self) -> int:
        token = self._next
        self._next += 1
        return token

    def is_remote(self, queue: Any) -> bool:
        return bool(queue.home) and queue.home != self.node.name and not queue.members

    # ---- access side: what this node's sessions ask ----------------------------------------

    def publish(self, home: str, vhost: str, queues: list[str], message: Message,
                outcome: Callable[[bool], None] | None) -> bool:
        """Forward a routed message to its queues' home; False (nothing sent) when that node
        is down. ``outcome(ok)`` hears when the home node has it (durably, where it must)."""
        if not self.is_up(home):
            self.errors[home] = self.errors.get(home, 0) + 1
            return False
        self.sent[home] = self.sent.get(home, 0) + 1
        token = 0
        if outcome is not None:
            token = self._token()
            self.publishes[token] = (home, outcome)
            self._deadlines[token] = self.node.monotonic() + self.answer_timeout
        self.send(home, {"f": Fwd.PUBLISH, "t": token, "v": vhost, "q": queues, "x": message.exchange,
                         "k": message.routing_key, "p": encoded_properties(message), "b": message.body})
        return True

    def call(self, queue: Any, message: dict[str, Any], answer: Answer) -> None:
        home = queue.home
        if not self.is_up(home):
            answer(ReplyCode.NOT_FOUND, unavailable_text(queue.name, queue.vhost, home), None)
            return
        token = self._token()
        self.calls[token] = (home, answer)
        self._deadlines[token] = self.node.monotonic() + self.answer_timeout
        self.send(home, {**message, "call": token, "v": queue.vhost, "q": queue.name})

    def consume(self, queue: Any, session: int, channel: int, consumer: Consumer, answer: Answer) -> None:
        key = (session, channel, consumer.tag)

        def answered(code: int, text: str, value: Any) -> None:
            if code:
                self.consumers.pop(key, None)
            answer(code, text, value)

        self.consumers[key] = RemoteConsumer(queue.home, queue.vhost, queue.name, consumer.no_ack)
        self.call(queue, {"f": Fwd.CONSUME, "s": session, "c": channel, "tag": consumer.tag,
                          "pf": consumer.prefetch, "pr": consumer.priority, "ex": consumer.exclusive,
                          "na": consumer.no_ack}, answered)

    def cancel(self, session: int, channel: int, tag: str) -> None:
        remote = self.consumers.pop((session, channel, tag), None)
        if remote is not None and self.is_up(remote.home):
            self.send(remote.home, {"f": Fwd.CANCEL, "v": remote.vhost, "q": remote.queue,
                                    "s": session, "c": channel, "tag": tag})

    def settle(self, queue: Any, how: str, ids: list[int]) -> None:
        if self.is_up(queue.home):
            self.send(queue.home, {"f": Fwd.SETTLE, "v": queue.vhost, "q": queue.name, "how": how, "ids": ids})

    def handed_over(self, session: int, channel: int, tag: str) -> None:
        """A forwarded delivery reached the client's connection: its credit goes back."""
        remote = self.consumers.get((session, channel, tag))
        if remote is not None:
            key = (remote.home, session, channel)
            self._owed[key] = self._owed.get(key, 0) + 1

    def flush(self) -> None:
        """Hand back the credit owed, one message per remote channel, for connections whose
        socket takes data: a slow client keeps it, and so slows its queue's home node."""
        if not self._owed:
            return
        sessions = self.node.sessions
        for key, n in list(self._owed.items()):
            home, session_id, channel = key
            session = sessions.get(session_id)
            if session is not None and not session.writable:
                continue
            del self._owed[key]
            if session is not None:
                self.send(home, {"f": Fwd.CREDIT, "s": session_id, "c": channel, "n": n})

    def tick(self, now: float) -> None:
        """Fail what waited too long for an answer: a link can lose messages without going
        down (a reconnect), and a publisher must hear a nack rather than nothing."""
        late = []
        for token, deadline in self._deadlines.items():  # in deadline order: one timeout for all
            if deadline > now:
                break
            late.append(token)
        for token in late:
            del self._deadlines[token]
            waiting = self.publishes.pop(token, None)
            if waiting is not None:
                log.warning("no answer from %s for a forwarded publish in %.0fs: nacked", waiting[0],
                            self.answer_timeout)
                waiting[1](False)
            call = self.calls.pop(token, None)
            if call is not None:
                call[1](ReplyCode.NOT_FOUND, f"node '{call[0]}' did not answer in time", None)

    def queue_gone(self, vhost: str, queue: str) -> None:
        """A queue that lived elsewhere was deleted: this node's consumers of it are
        cancelled (basic.cancel to clients that asked for consumer_cancel_notify)."""
        for key in [k for k, r in self.consumers.items() if r.vhost == vhost and r.queue == queue]:
            del self.consumers[key]
            session = self.node.sessions.get(key[0])
            if session is not None:
                session.consumer_cancelled_by_server(key[1], key[2])

    # ---- link changes ------------------------------------------------------------------

    def released_by(self, peer: str) -> None:
        """``peer`` saw this node unreachable and let go of our consumers of its queues (we
        may not have noticed: a pause looks like nothing from inside): cancel them, as
        RabbitMQ does when a queue's node goes away, so their clients consume again."""
        for key, remote in list(self.consumers.items()):
            if remote.home == peer:
                del self.consumers[key]
                session = self.node.sessions.get(key[0])
                if session is not None:
                    session.consumer_cancelled_by_server(key[1], key[2])
        self.node.flush()

    def peer_down(self, peer: str) -> None:
        """``peer`` is unreachable: what waited on it fails, what it held here is released."""
        for token, (home, outcome) in list(self.publishes.items()):
            if home == peer:
                del self.publishes[token]
                self.errors[peer] = self.errors.get(peer, 0) + 1
                outcome(False)
        for token, (home, answer) in list(self.calls.items()):
            if home == peer:
                del self.calls[token]
                answer(ReplyCode.NOT_FOUND, f"node '{peer}' is down or inaccessible", None)
        self.released_by(peer)  # its consumers here are gone (as RabbitMQ when a queue's node goes away)
        for proxy in list(self.proxies.values()):
            if proxy.peer == peer:
                self._release_proxy(proxy)
        self.node.flush()

    def _release_proxy(self, proxy: Proxy) -> None:
        self.proxies.pop(proxy.ref_id, None)
        self._proxy_of.pop((proxy.peer, proxy.session), None)
        for channel, queues in proxy.queues.items():
            for queue in queues:
                if not queue.deleted:
                    queue.release_owner(ConsumerRef(proxy.ref_id, channel))
                    self.node.queue_changed(queue)

    # ---- home side: a peer's requests for queues that live here -----------------------------

    def _proxy(self, peer: str, session: int) -> Proxy:
        ref_id = self._proxy_of.get((peer, session))
        if ref_id is None:
            ref_id = self.node.new_ref_id()
            self._proxy_of[(peer, session)] = ref_id
            self.proxies[ref_id] = Proxy(peer, session, ref_id)
        return self.proxies[ref_id]

    def _queue(self, message: dict[str, Any]) -> Any:
        vhost = self.node.broker.vhosts.get(message["v"])
        queue = vhost.queues.get(message["q"]) if vhost is not None else None
        if queue is None or queue.deleted:
            raise not_found(f"no queue '{message['q']}' in vhost '{message['v']}'")
        return queue

    def on_message(self, peer: str, message: dict[str, Any]) -> None:
        kind = message.get("f")
        handler = _HANDLERS.get(kind) if isinstance(kind, int) else None  # IntEnum keys: int lookup
        if handler is None:
            log.warning("ignoring forwarding message of kind %r from %s", kind, peer)
            return
        try:
            handler(self, peer, message)
        except AMQPError as error:
            call = message.get("call")
            if call:
                self.send(peer, {"f": Fwd.ANSWER, "call": call, "e": int(error.code), "et": error.text})
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("malformed forwarding message from %s: %s", peer, exc)
        self.schedule_flush()

    def _on_publish(self, peer: str, m: dict[str, Any]) -> None:
        node = self.node
        vhost = node.broker.vhosts.get(m["v"])
        token = m["t"]
        if vhost is None:
            if token:
                self.send(peer, {"f": Fwd.PUBLISHED, "t": token, "ok": False})
            return
        properties: bytes = m["p"]
        message = Message.from_publish(m["x"], m["k"], m["b"], properties, decode_properties(properties))
        queues = [q for q in (vhost.queues.get(name) for name in m["q"]) if q is not None and not q.deleted]
        outcome = vhost.enqueue_to(queues, message, node.wall_ms())
        node.stored_publish(outcome, message, _PublishedAnswer(self, peer, token) if token else None)

    def _on_published(self, peer: str, m: dict[str, Any]) -> None:
        self._deadlines.pop(m["t"], None)
        waiting = self.publishes.pop(m["t"], None)
        if waiting is not None:
            waiting[1](bool(m["ok"]))

    def _on_answer(self, peer: str, m: dict[str, Any]) -> None:
        self._deadlines.pop(m["call"], None)
        waiting = self.calls.pop(m["call"], None)
        if waiting is not None:
            waiting[1](int(m.get("e", 0)), str(m.get("et", "")), m.get("value"))

    def _on_consume(self, peer: str, m: dict[str, Any]) -> None:
        queue = self._queue(m)
        proxy = self._proxy(peer, m["s"])
        channel = m["c"]
        ref = ConsumerRef(proxy.ref_id, channel)
        queue.add_consumer(Consumer(tag=m["tag"], owner=ref, prefetch=m["pf"], priority=m["pr"],
                                    exclusive=m["ex"], no_ack=m["na"]))
        proxy.credit.setdefault(channel, self.credit)
        proxy.queues.setdefault(channel, set()).add(queue)
        self.node.queue_changed(queue)
        self.send(peer, {"f": Fwd.ANSWER, "call": m["call"], "e": 0})

    def _on_cancel(self, peer: str, m: dict[str, Any]) -> None:
        queue = self._queue(m)
        queue.cancel_consumer(m["tag"])
        self.node.queue_changed(queue)
        self.node.auto_delete_check(queue)

    def _on_credit(self, peer: str, m: dict[str, Any]) -> None:
        ref_id = self._proxy_of.get((peer, m["s"]))
        proxy = self.proxies.get(ref_id) if ref_id is not None else None
        if proxy is None:
            return
        channel = m["c"]
        proxy.credit[channel] = proxy.credit.get(channel, 0) + int(m["n"])
        for queue in proxy.queues.get(channel, ()):
            self.node.queue_changed(queue)

    def _on_settle(self, peer: str, m: dict[str, Any]) -> None:
        queue = self._queue(m)
        ids = [int(i) for i in m["ids"]]
        self.node.settle_here(queue, m["how"], ids)

    def _on_get(self, peer: str, m: dict[str, Any]) -> None:
        queue = self._queue(m)
        proxy = self._proxy(peer, m["s"])
        no_ack = bool(m["na"])
        result = queue.get(self.node.wall_ms(), no_ack, owner=ConsumerRef(proxy.ref_id, m["c"]))
        value = None
        if result is not None:
            if not no_ack:
                proxy.queues.setdefault(m["c"], set()).add(queue)
            msg = result.message
            value = [result.msg_id, result.redelivered, msg.exchange, msg.routing_key, result.message_count,
                     encoded_properties(msg), message_body(self.node.persistence, queue, msg)]
            self.node.counters.messages_delivered_get += 1
        self.node.queue_changed(queue)
        self.send(peer, {"f": Fwd.ANSWER, "call": m["call"], "e": 0, "value": value})

    def _on_purge(self, peer: str, m: dict[str, Any]) -> None:
        queue = self._queue(m)
        count = queue.purge()
        self.node.queue_changed(queue)
        self.send(peer, {"f": Fwd.ANSWER, "call": m["call"], "e": 0, "value": count})

    def _on_stat(self, peer: str, m: dict[str, Any]) -> None:
        queue = self._queue(m)
        self.send(peer, {"f": Fwd.ANSWER, "call": m["call"], "e": 0,
                         "value": [queue.messages_ready, queue.consumer_count]})

    def _on_deliver(self, peer: str, m: dict[str, Any]) -> None:
        node = self.node
        session = node.sessions.get(m["s"])
        key = (m["s"], m["c"], m["tag"])
        remote = self.consumers.get(key)
        if session is None or remote is None or not session.deliver_forwarded(m, remote):
            # nobody to hand it to any more (its consumer was cancelled while it travelled):
            # back to the queue, or it would stay unacknowledged there for good
            self.send(peer, {"f": Fwd.SETTLE, "v": m["v"], "q": m["q"], "how": "requeue", "ids": [m["id"]]})
            return
        node.session_changed(session)

    # ---- home side: deliveries to a proxy's consumers (the node's delivery loop) ------------

    def may_deliver(self, ref: ConsumerRef) -> bool:
        proxy = self.proxies.get(ref.session_id)
        return proxy is not None and proxy.credit.get(ref.channel, 0) > 0 and self.is_up(proxy.peer)

    def deliver(self, queue: Any, delivery: Any) -> None:
        ref = delivery.consumer.owner
        proxy = self.proxies[ref.session_id]
        proxy.credit[ref.channel] = proxy.credit.get(ref.channel, 0) - 1
        self.sent[proxy.peer] = self.sent.get(proxy.peer, 0) + 1
        message = delivery.message
        self.send(proxy.peer, {
            "f": Fwd.DELIVER, "s": proxy.session, "c": ref.channel, "tag": delivery.consumer.tag,
            "id": delivery.msg_id, "r": delivery.redelivered, "x": message.exchange, "k": message.routing_key,
            "p": encoded_properties(message), "b": message_body(self.node.persistence, queue, message),
            "v": queue.vhost, "q": queue.name,
        })
        self.node.counters.messages_delivered += 1


class _PublishedAnswer:
    """Stands where the store expects a session waiting for a confirm (see Persistence)."""

    def __init__(self, forwarder: Forwarder, peer: str, token: int) -> None:
        self.forwarder, self.peer, self.token = forwarder, peer, token

    def store_committed(self, channel: int, seq: int) -> None:
        self.outcome(True)

    def store_failed(self, channel: int, seq: int) -> None:
        self.outcome(False)

    def outcome(self, ok: bool) -> None:
        self.forwarder.send(self.peer, {"f": Fwd.PUBLISHED, "t": self.token, "ok": ok})


_HANDLERS: dict[Fwd, Callable[[Forwarder, str, dict[str, Any]], None]] = {
    Fwd.PUBLISH: Forwarder._on_publish,
    Fwd.PUBLISHED: Forwarder._on_published,
    Fwd.CONSUME: Forwarder._on_consume,
    Fwd.DELIVER: Forwarder._on_deliver,
    Fwd.SETTLE: Forwarder._on_settle,
    Fwd.CANCEL: Forwarder._on_cancel,
    Fwd.CREDIT: Forwarder._on_credit,
    Fwd.GET: Forwarder._on_get,
    Fwd.PURGE: Forwarder._on_purge,
    Fwd.STAT: Forwarder._on_stat,
    Fwd.ANSWER: Forwarder._on_answer,
}
