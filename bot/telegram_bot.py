"""The Telegram side: python-telegram-bot handlers that relay each chat to Rasa, like the web chat does.

build_application() makes the Application; start_telegram() / stop_telegram() run it inside an
event loop that is already running (the delivery process), by long polling or by webhook.
"""
from __future__ import annotations

import asyncio
import html
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Dict, List, Optional, Sequence
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from telegram import BotCommand, ChatMember, InputFile, LinkPreviewOptions, Message, Update
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError, TimedOut
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)

from bot.models import DIRECTION_IN, DIRECTION_OUT, Champion
from bot.my_data import FILENAME as MY_DATA_FILENAME
from bot.my_data import MyDataFiles
from bot.rasa_tracker import TrackerEvents
from bot.repository import ChatRepository
from bot.rasa_client import RasaClient, parse_rasa_urls
from bot.sender_ids import sender_id
from bot.settings import Settings
from bot.text import clean_text
from bot.telegram_format import (
    PARSE_MODE,
    CallbackRepository,
    escape,
    load_wording,
    render,
    utf16_len,
)
from bot.telegram_limits import make_bot

log = logging.getLogger(__name__)

CHANNEL = "telegram"
DISPLAY_NAME_MAX = 200  # champions.display_name
# Rasa intents the commands start (domain/basics.yml).
GREET_PAYLOAD = "/greet"
HELP_PAYLOAD = "/help"
BLOCKED_REASON = "blocked the bot"
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.MY_CHAT_MEMBER]
POLL_TIMEOUT = 10  # seconds a getUpdates long poll waits
REPLY_RETRIES = 3  # retries after a 429 for a reply (the shared rate limiter waits retry_after first)
MAX_CONCURRENT_UPDATES = 64
TELEGRAM_MAX_TEXT = 4096
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
SERVICES_KEY = "companion"


class TelegramSetupError(ValueError):
    """The Telegram settings cannot work (e.g. webhook mode without a secret token)."""


@dataclass
class Services:
    """What the handlers share: settings, repositories, wording and the HTTP session to Rasa."""

    settings: Settings
    rasa_url: str
    chats: ChatRepository
    callbacks: CallbackRepository
    wording: Dict[str, Any]
    public_base_url: Optional[str] = None
    # The champion's "what do you know about me?" file, sent as a document.
    my_data: Optional[MyDataFiles] = None
    _http: Optional[aiohttp.ClientSession] = field(default=None, repr=False)
    _rasa: Optional[RasaClient] = field(default=None, repr=False)

    def rasa(self) -> RasaClient:
        """The Rasa servers (several when RASA_URL lists more than one), each conversation keeping to one."""
        if self._rasa is None:
            self._rasa = RasaClient(parse_rasa_urls(self.rasa_url))
        return self._rasa

    def reply(self, key: str, **values: str) -> str:
        """One of the Telegram side's replies from knowledge/telegram.yml."""
        text = self.wording["replies"][key]
        return text.format(**values) if values else text

    def http(self) -> aiohttp.ClientSession:
        """The HTTP session to Rasa, opened on first use inside the running loop."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.rasa_timeout_seconds)
            )
        return self._http

    async def close(self) -> None:
        """Close the HTTP session to Rasa (and the connection to Rasa's store)."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.my_data is not None:
            self.my_data.close()


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Handles different chats' updates at the same time, and each chat's updates in order."""

    def __init__(self, max_concurrent_updates: int = MAX_CONCURRENT_UPDATES) -> None:
        """Allow up to max_concurrent_updates updates in flight."""
        super().__init__(max_concurrent_updates)
        self._locks: Dict[int, asyncio.Lock] = {}
        self._users: Counter = Counter()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run coroutine once earlier updates of the same chat are done."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        lock = self._locks.setdefault(chat.id, asyncio.Lock())
        self._users[chat.id] += 1
        try:
            async with lock:
                await coroutine
        finally:
            self._users[chat.id] -= 1
            if self._users[chat.id] <= 0:
                del self._users[chat.id]
                self._locks.pop(chat.id, None)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to tear down."""


def _services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    """The shared services stored in bot_data by build_application()."""
    return context.bot_data[SERVICES_KEY]


def _send_options(bot: Any) -> Dict[str, Any]:
    """Extra send_message arguments: retries after a 429 when the bot has a rate limiter."""
    if isinstance(bot, ExtBot) and bot.rate_limiter is not None:
        return {"rate_limit_args": REPLY_RETRIES}
    return {}


# --- the champion and the transcript ---------------------------------------------------------


async def _champion(services: Services, chat_id: int, update: Optional[Update] = None) -> Champion:
    """The champion of this chat, created on first contact (named by their Telegram first name, for the team's list)."""
    return await asyncio.to_thread(
        services.chats.get_or_create_champion, CHANNEL, str(chat_id), _first_name(update)
    )


def _first_name(update: Optional[Update]) -> Optional[str]:
    """The sender's Telegram first name in a private chat, cleaned and capped; None otherwise."""
    user = update.effective_user if update is not None else None
    chat = update.effective_chat if update is not None else None
    if user is None or chat is None or chat.type != ChatType.PRIVATE:
        return None
    return clean_text(user.first_name or "", multiline=False)[:DISPLAY_NAME_MAX] or None


async def _store(
    services: Services,
    champion: Champion,
    direction: str,
    text: str,
    buttons: Optional[Sequence[Dict[str, Any]]] = None,
    payload: Optional[str] = None,
) -> None:
    """Add a message to the champion's transcript; a database hiccup is logged, never fatal here."""
    try:
        await asyncio.to_thread(services.chats.add_message, champion, direction, text, buttons, payload)
    except SQLAlchemyError:
        log.exception("could not store a Telegram message for champion %s", champion.id)


# --- talking to Rasa and to the chat ---------------------------------------------------------


async def rasa_replies(services: Services, chat_id: int, message: str) -> Optional[List[Dict[str, Any]]]:
    """Rasa's replies to message from this chat ({"text", "buttons"} each), or None when Rasa is
    down, too slow or answers with an error."""
    return await services.rasa().replies(services.http(), sender_id(CHANNEL, str(chat_id)), message)


async def ask_rasa(services: Services, chat_id: int, message: str) -> List[Dict[str, Any]]:
    """Rasa's replies, or the "trouble" / "no reply" wording when it is down or has nothing to say."""
    messages = await rasa_replies(services, chat_id, message)
    if messages is None:
        return [{"text": services.reply("trouble"), "buttons": []}]
    return messages or [{"text": services.reply("no_reply"), "buttons": []}]


async def _send_part(bot: Any, chat_id: int, text: str, markup: Any) -> Optional[Message]:
    """Send one HTML part; if Telegram refuses the formatting, send the same words as plain text."""
    options = _send_options(bot)
    no_preview = LinkPreviewOptions(is_disabled=True)
    for attempt in range(2):
        try:
            return await bot.send_message(
                chat_id, text, parse_mode=PARSE_MODE, reply_markup=markup,
                link_preview_options=no_preview, **options,
            )
        except BadRequest as exc:
            log.warning("Telegram refused a formatted message to chat %s: %s", chat_id, exc)
            plain = html.unescape(re.sub(r"<[^>]+>", "", text))
            return await bot.send_message(chat_id, plain, reply_markup=markup, **options)
        except TimedOut:
            raise  # it may have arrived: never send twice
        except NetworkError as exc:
            if attempt:
                raise
            log.warning("network trouble sending to chat %s, trying once more: %s", chat_id, exc)
    return None


async def send_replies(
    context: ContextTypes.DEFAULT_TYPE,
    champion: Champion,
    chat_id: int,
    messages: Sequence[Dict[str, Any]],
) -> None:
    """Store each companion message in the transcript, then send it as one or more Telegram messages."""
    services = _services(context)
    for message in messages:
        if message.get("attachment") == "my_data" and not message.get("text"):
            await _send_my_data(context, champion, chat_id)
            continue
        await _store(services, champion, DIRECTION_OUT, message["text"], message.get("buttons") or None)
        try:
            parts = await asyncio.to_thread(
                render, message["text"], message.get("buttons"), services.callbacks.store,
                public_base_url=services.public_base_url,
            )
        except SQLAlchemyError:
            log.exception("could not store a long button payload; sending without buttons")
            parts = render(message["text"], None, services.callbacks.store)
        try:
            for text, markup in parts:
                await _send_part(context.bot, chat_id, text, markup)
        except Forbidden:
            log.info("chat %s has blocked the bot", chat_id)
            await asyncio.to_thread(services.chats.set_reachable, champion, False, BLOCKED_REASON)
            return
        except TelegramError:
            log.exception("could not send a reply to chat %s", chat_id)
            return


async def _send_my_data(context: ContextTypes.DEFAULT_TYPE, champion: Champion, chat_id: int) -> None:
    """Send the champion everything held about them as a JSON document (bot/my_data.py)."""
    services = _services(context)
    if services.my_data is None:
        return
    try:
        data = await asyncio.to_thread(services.my_data.for_champion, champion.id)
    except Exception:  # noqa: BLE001 - the app database or Rasa's store is away
        log.exception("could not build the my-data file for chat %s", chat_id)
        data = None
    if data is None:
        await _say(context, champion, chat_id, "trouble")
        return
    try:
        await context.bot.send_document(
            chat_id, InputFile(data, filename=MY_DATA_FILENAME), **_send_options(context.bot)
        )
    except TelegramError:
        log.exception("could not send the my-data file to chat %s", chat_id)


async def _say(context: ContextTypes.DEFAULT_TYPE, champion: Champion, chat_id: int, key: str) -> None:
    """Send (and store) one of the Telegram side's own replies."""
    await send_replies(context, champion, chat_id, [{"text": _services(context).reply(key), "buttons": []}])


async def _typing(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    """Show "typing…" while Rasa thinks (best effort)."""
    try:
        await context.bot.send_chat_action(chat_id, ChatAction.TYPING)
    except TelegramError as exc:
        log.debug("no typing indicator for chat %s: %s", chat_id, exc)


async def relay(context: ContextTypes.DEFAULT_TYPE, champion: Champion, chat_id: int, message: str) -> None:
    """Pass message to Rasa as this chat and send its replies."""
    services = _services(context)
    await _typing(context, chat_id)
    await send_replies(context, champion, chat_id, await ask_rasa(services, chat_id, message))


# --- handlers ---------------------------------------------------------------------------------


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A typed message: stored, checked, relayed to Rasa; the replies are sent back."""
    services = _services(context)
    chat_id = update.effective_chat.id
    text = clean_text(update.effective_message.text or "")
    try:
        champion = await _champion(services, chat_id, update)
    except SQLAlchemyError:
        log.exception("could not find the champion of chat %s", chat_id)
        await context.bot.send_message(chat_id, services.reply("trouble"))
        return
    if not text:
        await _say(context, champion, chat_id, "empty_message")
        return
    await _store(services, champion, DIRECTION_IN, text)
    if len(text) > services.settings.max_message_chars:
        await _say(context, champion, chat_id, "too_long")
        return
    await relay(context, champion, chat_id, text)


def _attachment_kind(message: Message) -> str:
    """A short name for what a non-text message carries ("photo", "sticker", ...)."""
    attachment = message.effective_attachment
    if isinstance(attachment, (list, tuple)):
        return "photo"
    return type(attachment).__name__.lower() if attachment is not None else "message"


async def on_other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A sticker, photo, voice note, file...: kept in the transcript as a note, answered kindly."""
    services = _services(context)
    chat_id = update.effective_chat.id
    message = update.effective_message
    champion = await _champion(services, chat_id, update)
    caption = clean_text(message.caption or "")
    await _store(services, champion, DIRECTION_IN, f"[{_attachment_kind(message)}] {caption}".strip())
    await _say(context, champion, chat_id, "not_text")


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: the champion is (again) reachable and gets the team's messages; Rasa greets them."""
    services = _services(context)
    chat_id = update.effective_chat.id
    champion = await _champion(services, chat_id, update)
    await _store(services, champion, DIRECTION_IN, "/start")
    if champion.unreachable_at is not None:
        await asyncio.to_thread(services.chats.set_reachable, champion, True)
    if champion.opted_out_at is not None:
        await asyncio.to_thread(services.chats.set_opted_out, champion, False)
        await _say(context, champion, chat_id, "started_again")
    await relay(context, champion, chat_id, GREET_PAYLOAD)


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: the commands, then what the assistant can help with (Rasa's help and its buttons)."""
    services = _services(context)
    chat_id = update.effective_chat.id
    champion = await _champion(services, chat_id, update)
    await _store(services, champion, DIRECTION_IN, "/help")
    await _say(context, champion, chat_id, "help")
    replies = await rasa_replies(services, chat_id, HELP_PAYLOAD)
    if replies:  # Rasa's own help, with its topic buttons, when Rasa is there
        await send_replies(context, champion, chat_id, replies)


async def stop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/stop: no more messages from the engagement team; chatting still works."""
    services = _services(context)
    chat_id = update.effective_chat.id
    champion = await _champion(services, chat_id, update)
    await _store(services, champion, DIRECTION_IN, "/stop")
    if champion.opted_out_at is not None:
        await _say(context, champion, chat_id, "already_stopped")
        return
    await asyncio.to_thread(services.chats.set_opted_out, champion, True)
    await _say(context, champion, chat_id, "stopped")


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any other /command: point to /help (commands are never passed to Rasa as intents).

    Words after the command go to Rasa as a message of their own, so that "/anything I want to
    end my life" still reaches the crisis check.
    """
    services = _services(context)
    chat_id = update.effective_chat.id
    champion = await _champion(services, chat_id, update)
    text = clean_text(update.effective_message.text or "")
    words = text.split(maxsplit=1)
    if len(words) == 2 and words[1].strip():
        await _store(services, champion, DIRECTION_IN, text)
        if len(text) > services.settings.max_message_chars:
            await _say(context, champion, chat_id, "too_long")
            return
        await relay(context, champion, chat_id, words[1].strip())
        return
    await _store(services, champion, DIRECTION_IN, text[:200])
    await _say(context, champion, chat_id, "unknown_command")


def _button_title(message: Any, data: str) -> Optional[str]:
    """The title of the button with callback_data data on message, if it is still there."""
    markup = getattr(message, "reply_markup", None)
    for row in getattr(markup, "inline_keyboard", None) or ():
        for button in row:
            if button.callback_data == data:
                return button.text
    return None


async def _retire_keyboard(context: ContextTypes.DEFAULT_TYPE, message: Any, title: str) -> None:
    """Take the buttons off a tapped message, noting the choice under its text, so they can't be re-tapped."""
    if not isinstance(message, Message) or message.reply_markup is None:
        return
    services = _services(context)
    note = f"<i>{escape(services.reply('chosen', title=title))}</i>"
    try:
        original = message.text_html if message.text else ""
        if original and utf16_len(original) + utf16_len(note) + 2 <= TELEGRAM_MAX_TEXT:
            await message.edit_text(
                f"{original}\n\n{note}", parse_mode=ParseMode.HTML, reply_markup=None,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
            return
    except BadRequest as exc:
        log.info("could not note the choice on message %s: %s", message.message_id, exc)
    try:
        await message.edit_reply_markup(reply_markup=None)
    except BadRequest as exc:  # already edited, or too old to edit
        log.info("could not remove the buttons of message %s: %s", message.message_id, exc)


async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A tapped inline button: answered at once (no spinner), retired, recorded and relayed to Rasa."""
    services = _services(context)
    query = update.callback_query
    chat_id = update.effective_chat.id if update.effective_chat else query.from_user.id
    answered = False
    # Only our own buttons' payloads are expected, but a modified client can send any callback_data:
    # control characters and lone surrogates (which no database can store) are taken out first.
    data = clean_text(query.data or "")
    try:
        try:
            payload = await asyncio.to_thread(services.callbacks.resolve, data) if data else None
        except SQLAlchemyError:
            log.exception("could not look up a button payload")
            payload = None
        await query.answer()
        answered = True
        champion = await _champion(services, chat_id, update)
        if not payload:
            await _say(context, champion, chat_id, "button_expired")
            return
        title = _button_title(query.message, query.data or "") or payload
        await _retire_keyboard(context, query.message, title)
        await _store(services, champion, DIRECTION_IN, title, payload=payload)
        await relay(context, champion, chat_id, payload)
    finally:
        if not answered:
            try:
                await query.answer()
            except TelegramError as exc:
                log.warning("could not answer a callback query: %s", exc)


async def on_member(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The champion blocked the bot (unreachable) or unblocked it (reachable again)."""
    services = _services(context)
    change = update.my_chat_member
    if change.chat.type != ChatType.PRIVATE:
        return
    chat_id = change.chat.id
    status = change.new_chat_member.status
    if status in (ChatMember.BANNED, ChatMember.LEFT):
        champion = await asyncio.to_thread(services.chats.find_champion, CHANNEL, str(chat_id))
        if champion is not None:
            await asyncio.to_thread(services.chats.set_reachable, champion, False, BLOCKED_REASON)
            log.info("chat %s blocked the bot: marked unreachable", chat_id)
    elif status == ChatMember.MEMBER:
        champion = await _champion(services, chat_id, update)
        await asyncio.to_thread(services.chats.set_reachable, champion, True)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log any error a handler raised (never the message text)."""
    log.error("error while handling a Telegram update", exc_info=context.error)


# --- building and running ---------------------------------------------------------------------


def build_application(
    settings: Settings,
    *,
    session_factory: "sessionmaker[Session]",
    rasa_url: str,
    bot: Optional[ExtBot] = None,
) -> Application:
    """The Telegram application: handlers for text, buttons, /start, /help, /stop and blocking."""
    wording = load_wording()
    application = (
        ApplicationBuilder()
        .bot(bot if bot is not None else make_bot(settings))
        .concurrent_updates(PerChatUpdateProcessor())
        .build()
    )
    application.bot_data[SERVICES_KEY] = Services(
        settings=settings,
        rasa_url=rasa_url,
        chats=ChatRepository(session_factory),
        callbacks=CallbackRepository(session_factory),
        wording=wording,
        public_base_url=settings.public_base_url,
        my_data=MyDataFiles(session_factory, TrackerEvents.from_settings(settings)),
    )
    private = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler("start", start, filters=private))
    application.add_handler(CommandHandler("help", help_command, filters=private))
    application.add_handler(CommandHandler("stop", stop, filters=private))
    application.add_handler(MessageHandler(private & filters.COMMAND, unknown_command))
    application.add_handler(MessageHandler(private & filters.TEXT, on_text))
    application.add_handler(MessageHandler(private & filters.ATTACHMENT, on_other))
    application.add_handler(CallbackQueryHandler(on_button))
    application.add_handler(ChatMemberHandler(on_member, ChatMemberHandler.MY_CHAT_MEMBER))
    application.add_error_handler(on_error)
    return application


def webhook_path(settings: Settings) -> str:
    """The path the webhook listens on: the path of TELEGRAM_WEBHOOK_URL."""
    return urlsplit(settings.telegram_webhook_url or "").path.strip("/")


def check_webhook_settings(settings: Settings) -> None:
    """Refuse webhook mode without a public HTTPS-style URL or a usable secret token."""
    if not settings.telegram_webhook_url or urlsplit(settings.telegram_webhook_url).scheme not in ("http", "https"):
        raise TelegramSetupError("TELEGRAM_MODE=webhook needs TELEGRAM_WEBHOOK_URL (the public https:// address)")
    if not settings.telegram_webhook_secret:
        raise TelegramSetupError("TELEGRAM_MODE=webhook needs TELEGRAM_WEBHOOK_SECRET (Telegram's secret-token header)")
    if not SECRET_TOKEN.fullmatch(settings.telegram_webhook_secret):
        raise TelegramSetupError("TELEGRAM_WEBHOOK_SECRET must be 1-256 letters, digits, '_' or '-'")


async def register_commands(application: Application) -> None:
    """Tell Telegram the command menu from knowledge/telegram.yml (best effort)."""
    commands = _services_of(application).wording["commands"]
    try:
        await application.bot.set_my_commands(
            [BotCommand(c["command"], c["description"]) for c in commands]
        )
    except TelegramError as exc:
        log.warning("could not register the bot's commands: %s", exc)


def _services_of(application: Application) -> Services:
    """The services stored on application."""
    return application.bot_data[SERVICES_KEY]


async def start_telegram(application: Application, settings: Settings) -> None:
    """Start the application inside the running loop, by long polling or (TELEGRAM_MODE=webhook)
    by a webhook that refuses requests without Telegram's secret-token header."""
    webhook = settings.telegram_mode == "webhook"
    if webhook:
        check_webhook_settings(settings)
    await application.initialize()
    await register_commands(application)
    await application.start()
    if webhook:
        await application.updater.start_webhook(
            listen=settings.telegram_webhook_host,
            port=settings.telegram_webhook_port,
            url_path=webhook_path(settings),
            webhook_url=settings.telegram_webhook_url,
            secret_token=settings.telegram_webhook_secret,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
            bootstrap_retries=3,
        )
        log.info("Telegram webhook listening on %s:%s", settings.telegram_webhook_host, settings.telegram_webhook_port)
    else:
        await application.updater.start_polling(
            timeout=POLL_TIMEOUT,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
            bootstrap_retries=-1,
        )
        log.info("Telegram long polling started")


async def stop_telegram(application: Application) -> None:
    """Stop polling or the webhook server, the handlers and the HTTP session to Rasa."""
    if application.updater is not None and application.updater.running:
        await application.updater.stop()
    if application.running:
        await application.stop()
    await application.shutdown()
    services = application.bot_data.get(SERVICES_KEY)
    if services is not None:
        await services.close()
