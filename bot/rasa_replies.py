"""Reading Rasa's REST replies into the messages a channel shows (web chat and Telegram alike)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from bot.my_data_download import PATH as MY_DATA_PATH
from bot.plan_download import PATH as PLAN_PATH

# Links a companion message may carry (custom.download from action_show_plan and action_my_data).
DOWNLOAD_PREFIX = f"{PLAN_PATH}?"
DOWNLOAD_PREFIXES = (DOWNLOAD_PREFIX, f"{MY_DATA_PATH}?")
# Files a channel attaches itself (custom.attachment): the champion's own data (Telegram).
ATTACHMENTS = ("my_data",)


def reply(text: str, buttons: Optional[List[Dict[str, str]]] = None) -> Dict[str, Any]:
    """One companion message: its text and buttons ({"title", "payload"} or {"title", "url"})."""
    return {"text": text, "buttons": buttons or []}


def rasa_messages(data: Any) -> List[Dict[str, Any]]:
    """Keep the text and well-formed buttons of Rasa's REST reply; skip anything else."""
    messages = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict):
            continue
        text = item.get("text") if isinstance(item.get("text"), str) else ""
        buttons = []
        for button in item.get("buttons") or []:
            if not isinstance(button, dict):
                continue
            title, payload = button.get("title"), button.get("payload")
            if isinstance(title, str) and isinstance(payload, str) and title.strip() and payload.strip():
                buttons.append({"title": title, "payload": payload})
        download = (item.get("custom") or {}).get("download") if isinstance(item.get("custom"), dict) else None
        if isinstance(download, dict):
            url, label = download.get("url"), download.get("label")
            # Only our own downloads (the plan, my data) are offered as links; anything else is dropped.
            if isinstance(url, str) and url.startswith(DOWNLOAD_PREFIXES) and isinstance(label, str) and label.strip():
                buttons.append({"title": label, "url": url})
        attachment = (item.get("custom") or {}).get("attachment") if isinstance(item.get("custom"), dict) else None
        if text.strip() or buttons:
            messages.append(reply(text.strip(), buttons))
            if attachment in ATTACHMENTS:
                messages[-1]["attachment"] = attachment
        elif attachment in ATTACHMENTS:
            messages.append({**reply(""), "attachment": attachment})
    return messages
