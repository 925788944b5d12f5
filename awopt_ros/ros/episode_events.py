"""Reading ``/episode/event`` (latched std_msgs/String JSON, docs/INTERFACES.md) in nodes that
restart per episode (the policy node, the residual controller)."""
import json


def new_start(data, current_episode):
    """Return ``(episode, stamp_s)`` when the event JSON ``data`` (str) is the ``start`` of an
    episode other than ``current_episode``, else None (another event, or the start of the
    episode already running: a latched event heard again). ``stamp_s`` is the event's
    ``stamp_s`` (s) or None.

    Raises:
        ValueError: ``data`` is not a JSON object with an ``event`` key.
    """
    try:
        event = json.loads(data)
        kind, episode = event['event'], event.get('episode')
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f'{type(exc).__name__}: {exc}') from exc
    if kind != 'start' or episode == current_episode:
        return None
    return episode, event.get('stamp_s')


def start_of(data, current_episode, logger):
    """:func:`new_start` for a node's ``/episode/event`` callback: a malformed event is logged
    as a warning on ``logger`` (rclpy logger) and gives None."""
    try:
        return new_start(data, current_episode)
    except ValueError as exc:
        logger.warning(f'bad episode event ignored: {exc}')
        return None


def is_end(data):
    """Return whether the event JSON ``data`` (str) is an episode's ``end`` (a malformed event
    is not)."""
    try:
        event = json.loads(data)
        return isinstance(event, dict) and event.get('event') == 'end'
    except ValueError:
        return False
