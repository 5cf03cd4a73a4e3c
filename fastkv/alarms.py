"""etcd's alarm store: which member raised which alarm (NOSPACE, CORRUPT).

Replicated state: alarms are raised and cleared through the log (AlarmRequest
ACTIVATE/DEACTIVATE), so every member agrees; GET reads the local copy, as
etcd does. While NOSPACE is active, writes that add data fail with
"database space exceeded" (etcd's capped applier); while CORRUPT is active
every write fails with "corrupt cluster".
"""
from __future__ import annotations

ALARM_NONE, ALARM_NOSPACE, ALARM_CORRUPT = 0, 1, 2
ACTION_GET, ACTION_ACTIVATE, ACTION_DEACTIVATE = 0, 1, 2
ALARM_TYPES = (ALARM_NONE, ALARM_NOSPACE, ALARM_CORRUPT)
ALARM_NAMES = {ALARM_NONE: "NONE", ALARM_NOSPACE: "NOSPACE", ALARM_CORRUPT: "CORRUPT"}
DEFAULT_QUOTA_BYTES = 2 * 1024 ** 3   # etcd's DefaultQuotaBytes, for --quota-backend-bytes 0


def _member(member_id: int, alarm: int) -> dict:
    m = {"alarm": alarm}
    if member_id:
        m["memberID"] = member_id
    return m


def alarm_text(member_id: int, alarm: int) -> str:
    """An AlarmMember as etcd's String() gives it (protobuf compact text, as in
    StatusResponse.errors): "memberID:1234 alarm:NOSPACE "."""
    member = f"memberID:{member_id} " if member_id else ""
    return f"{member}alarm:{ALARM_NAMES.get(alarm, alarm)} "


class AlarmStore:
    def __init__(self) -> None:
        self.active: set[tuple[int, int]] = set()   # (alarm type, member id)

    def has(self, alarm: int) -> bool:
        return any(a == alarm for a, _m in self.active)

    def get(self, alarm: int = ALARM_NONE) -> list[dict]:
        """Active alarms of a type (NONE: all), in a stable order."""
        return [_member(m, a) for a, m in sorted(self.active)
                if alarm == ALARM_NONE or a == alarm]

    def texts(self) -> list[str]:
        """The active alarms as etcd lists them in StatusResponse.errors."""
        return [alarm_text(m, a) for a, m in sorted(self.active)]

    def apply(self, action: int, member_id: int, alarm: int) -> dict:
        """An ACTIVATE or DEACTIVATE from the log; returns {"alarms": [what changed]}."""
        changed = []
        if action == ACTION_ACTIVATE:   # etcd 3.4 stores even NONE (and lists it)
            if (alarm, member_id) not in self.active:
                self.active.add((alarm, member_id))
            changed.append(_member(member_id, alarm))
        elif action == ACTION_DEACTIVATE:
            if (alarm, member_id) in self.active:
                self.active.discard((alarm, member_id))
                changed.append(_member(member_id, alarm))
        return {"alarms": changed} if changed else {}

    def snapshot_state(self) -> list:
        return sorted(self.active)

    def restore(self, state) -> None:
        self.active = {(int(a), int(m)) for a, m in (state or ())}
