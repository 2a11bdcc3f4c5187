"""Notifications: signed webhooks (generic JSON or Slack) on promotion, rollback, gate failure,
drift alert and approval request, retried with backoff, recorded in ``webhook_deliveries``."""
from tuneloop.notify.events import collect_events
from tuneloop.notify.notifier import Notifier, delivery_id, recent_deliveries
from tuneloop.notify.webhooks import EVENTS, WebhookConfig, post_with_retries, sign, verify_signature

__all__ = ["EVENTS", "Notifier", "WebhookConfig", "collect_events", "delivery_id", "post_with_retries",
           "recent_deliveries", "sign", "verify_signature"]
