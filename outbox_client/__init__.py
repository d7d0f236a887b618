"""What producing and consuming services import.

>>> from outbox_client import enqueue, CourseCreatedEvent, EventMetadata
"""

from outbox_client.client import NATSClient, NATSConnectionError
from outbox_client.consumer import ConsumerConfig, EventConsumer, PermanentError, RetryableError
from outbox_client.enqueue import enqueue, enqueue_many, with_events
from outbox_client.errors import (
    EnqueueError,
    EventDecodeError,
    OutboxError,
    UnknownEventTypeError,
)
from outbox_client.events import *  # noqa: F403
from outbox_client.events import __all__ as _event_names
from outbox_client.headers import Header
from outbox_client.inbox import Inbox
from outbox_client.nats_config import NATSConfig
from outbox_client.publisher import EventPublisher, PublishAck, PublishFailedError
from outbox_client.streams import StreamConfig
from outbox_client.table import NOTIFY_CHANNEL, PARTITIONS, metadata, outbox, partition_of

__all__ = [
    "ConsumerConfig",
    "EventConsumer",
    "EventPublisher",
    "Inbox",
    "NATSClient",
    "NATSConfig",
    "NATSConnectionError",
    "PermanentError",
    "PublishAck",
    "PublishFailedError",
    "RetryableError",
    "StreamConfig",
    "NOTIFY_CHANNEL",
    "PARTITIONS",
    "EnqueueError",
    "EventDecodeError",
    "Header",
    "OutboxError",
    "UnknownEventTypeError",
    "enqueue",
    "enqueue_many",
    "metadata",
    "outbox",
    "partition_of",
    "with_events",
    *_event_names,
]
