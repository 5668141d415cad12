/* The co-production companion's chat page.
 * Every piece of text is put on the page with textContent (never innerHTML),
 * so anything a person or the assistant writes shows as plain text.
 * While the page is visible it asks every few seconds for messages stored since
 * the last one it has (GET /api/history?after=<id>): messages the assistant sends
 * on its own, such as the engagement team's news, appear without a reload. */
(function () {
  "use strict";

  var STORAGE_KEY = "coproduction-companion.sender-id";
  // How often to look for new messages while the page is visible, and the longest wait after failures.
  var POLL_MS = 3000;
  var MAX_POLL_MS = 60000;
  var POLL_LIMIT = 100;
  // Used only until GET /api/interface answers (wording lives in knowledge/interface.yml).
  var page = {
    you: "You said:",
    companion: "Companion said:",
    new_message: "New message:",
    choices_label: "Suggested replies",
    offline: "Sorry, I can't connect just now. Please check your internet connection and try again.",
    welcome: "",
    welcome_buttons: []
  };

  var transcript = document.getElementById("transcript");
  var typing = document.getElementById("typing-text");
  var form = document.getElementById("composer");
  var input = document.getElementById("message");
  var busy = false;
  var senderId = loadSenderId();
  // The highest message id fetched from the server so far; ids of messages already on the page
  // from a POST reply (the next poll skips them); a counter that changes whenever a send starts.
  var cursor = 0;
  var shownIds = {};
  var sends = 0;
  var pollTimer = null;
  var pollDelay = POLL_MS;
  var polling = false;
  var ready = false;

  function randomId() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") {
      return c.randomUUID();
    }
    if (c && typeof c.getRandomValues === "function") {
      var bytes = new Uint8Array(16);
      c.getRandomValues(bytes);
      return Array.prototype.map.call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      }).join("");
    }
    return "id" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function loadSenderId() {
    var id = null;
    try {
      id = window.localStorage.getItem(STORAGE_KEY);
    } catch (e) { /* storage blocked: this visit only */ }
    if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
      id = randomId();
      try {
        window.localStorage.setItem(STORAGE_KEY, id);
      } catch (e) { /* storage blocked: this visit only */ }
    }
    return id;
  }

  function applyPageWording(wording) {
    Object.keys(wording || {}).forEach(function (key) { page[key] = wording[key]; });
    document.querySelectorAll("[data-text]").forEach(function (el) {
      var value = page[el.getAttribute("data-text")];
      if (typeof value === "string" && value) { el.textContent = value; }
    });
    document.querySelectorAll("[data-placeholder]").forEach(function (el) {
      var value = page[el.getAttribute("data-placeholder")];
      if (typeof value === "string") { el.setAttribute("placeholder", value); }
    });
    document.querySelectorAll("[data-label]").forEach(function (el) {
      var value = page[el.getAttribute("data-label")];
      if (typeof value === "string" && value) { el.setAttribute("aria-label", value); }
    });
    if (typeof page.title === "string" && page.title) { document.title = page.title; }
  }

  function scrollToEnd() {
    transcript.scrollTop = transcript.scrollHeight;
  }

  function removeChoices() {
    transcript.querySelectorAll(".choices").forEach(function (group) {
      group.parentNode.removeChild(group);
    });
  }

  function addLinks(item, links) {
    links.forEach(function (link) {
      // Only our own downloads: the five steps plan and the champion's own data.
      if (typeof link.url !== "string" ||
          (link.url.indexOf("/api/plan.md?") !== 0 && link.url.indexOf("/api/my-data.json?") !== 0)) { return; }
      var a = document.createElement("a");
      a.className = "download";
      a.href = link.url;
      a.setAttribute("download", "");
      a.textContent = link.title;
      item.appendChild(a);
    });
  }

  function addMessage(direction, text, buttons, showChoices, label) {
    var item = document.createElement("div");
    item.className = "msg msg--" + (direction === "in" ? "in" : "out");
    var who = document.createElement("span");
    who.className = "visually-hidden";
    who.textContent = label || (direction === "in" ? page.you : page.companion);
    var body = document.createElement("p");
    body.className = "msg__text";
    body.textContent = text;
    item.appendChild(who);
    item.appendChild(body);
    transcript.appendChild(item);
    var all = Array.isArray(buttons) ? buttons : [];
    // Download links stay with their message; tap-to-answer buttons only on the latest reply.
    addLinks(item, all.filter(function (b) { return b && b.url; }));
    var choices = all.filter(function (b) { return b && !b.url; });
    if (choices.length && showChoices !== false) {
      addChoices(choices);
    }
    scrollToEnd();
    return item;
  }

  function addChoices(buttons) {
    var group = document.createElement("div");
    group.className = "choices";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", page.choices_label);
    buttons.forEach(function (button) {
      if (!button || typeof button.title !== "string" || typeof button.payload !== "string") { return; }
      var el = document.createElement("button");
      el.type = "button";
      el.className = "choice";
      el.textContent = button.title;
      el.addEventListener("click", function () {
        send({ payload: button.payload, title: button.title }, button.title);
      });
      group.appendChild(el);
    });
    transcript.appendChild(group);
  }

  function setTyping(on) {
    typing.hidden = !on;
    transcript.setAttribute("aria-busy", on ? "true" : "false");
  }

  function focusInput() {
    try {
      input.focus({ preventScroll: true });
    } catch (e) {
      input.focus();
    }
  }

  function resizeInput() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 200) + "px";
  }

  function send(body, shown) {
    if (busy) { return; }
    busy = true;
    removeChoices();
    var draft = body.text;
    var bubble = shown && shown.trim() ? addMessage("in", shown.trim(), null) : null;
    if (draft !== undefined) {
      input.value = "";
      resizeInput();
    }
    setTyping(true);
    sends += 1;
    body.sender_id = senderId;
    fetch("/api/messages", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return null; });
    }).then(function (data) {
      var messages = data && Array.isArray(data.messages) ? data.messages : [];
      if (data && data.accepted === false && bubble) {
        // Not passed on (too long, or not stored): give the words back to edit.
        bubble.parentNode.removeChild(bubble);
        if (draft !== undefined) { input.value = draft; resizeInput(); }
      }
      if (!messages.length) { messages = [{ text: page.offline, buttons: [] }]; }
      if (data && isId(data.id)) { shownIds[data.id] = true; }
      messages.forEach(function (m) {
        if (isId(m.id)) { shownIds[m.id] = true; }
        addMessage("out", String(m.text || ""), m.buttons);
      });
    }).catch(function () {
      if (bubble) { bubble.parentNode.removeChild(bubble); }
      if (draft !== undefined) { input.value = draft; resizeInput(); }
      addMessage("out", page.offline, null);
    }).then(function () {
      setTyping(false);
      busy = false;
      focusInput();
      schedulePoll(0);  // anything sent to us meanwhile shows straight after the reply
    });
  }

  function isId(value) {
    return typeof value === "number" && isFinite(value) && value > 0;
  }

  // --- messages stored since the page last looked (pushed by the assistant) -------------------

  function showNew(messages) {
    messages.forEach(function (m) {
      if (!m || !isId(m.id)) { return; }
      if (m.id > cursor) { cursor = m.id; }
      if (shownIds[m.id]) { delete shownIds[m.id]; return; }
      var buttons = Array.isArray(m.buttons) ? m.buttons : [];
      if (buttons.some(function (b) { return b && !b.url; })) { removeChoices(); }
      // The transcript is a polite live region: screen readers read the new message out.
      addMessage(m.direction, String(m.text || ""), buttons, true, m.direction === "in" ? null : page.new_message);
    });
  }

  function poll() {
    pollTimer = null;
    if (!ready || busy || polling || document.hidden) { return; }
    polling = true;
    var started = sends;
    fetch("/api/history?sender_id=" + encodeURIComponent(senderId) + "&after=" + cursor + "&limit=" + POLL_LIMIT)
      .then(function (response) {
        if (!response.ok) { throw new Error("history " + response.status); }
        return response.json();
      })
      .then(function (data) {
        polling = false;
        pollDelay = POLL_MS;
        // A send started meanwhile: its messages may be in this answer before their ids are known.
        if (busy || started !== sends) { schedulePoll(0); return; }
        var messages = Array.isArray(data.messages) ? data.messages : [];
        showNew(messages);
        schedulePoll(messages.length >= POLL_LIMIT ? 0 : pollDelay);
      })
      .catch(function () {
        // Offline or the server is restarting: try again later, more and more slowly, quietly.
        polling = false;
        pollDelay = Math.min(pollDelay * 2, MAX_POLL_MS);
        schedulePoll(pollDelay);
      });
  }

  function schedulePoll(delay) {
    if (pollTimer !== null) { window.clearTimeout(pollTimer); }
    pollTimer = window.setTimeout(poll, delay);
  }

  function pollNow() {
    if (document.hidden) { return; }
    pollDelay = POLL_MS;
    schedulePoll(0);
  }

  function showWelcome(question) {
    if (page.welcome) {
      addMessage("out", page.welcome, Array.isArray(page.welcome_buttons) ? page.welcome_buttons : []);
    }
    // First visit: which organisation do they volunteer with? (Asked once; they can skip it.)
    if (question && typeof question.text === "string" && question.text && Array.isArray(question.buttons)) {
      addMessage("out", question.text, question.buttons);
    }
  }

  function loadHistory() {
    return fetch("/api/history?sender_id=" + encodeURIComponent(senderId))
      .then(function (response) { return response.ok ? response.json() : { messages: [] }; })
      .then(function (data) { return Array.isArray(data.messages) ? data.messages : []; })
      .catch(function () { return []; });
  }

  function loadWording() {
    return fetch("/api/interface")
      .then(function (response) { return response.ok ? response.json() : {}; })
      .then(function (data) {
        applyPageWording(data.page || {});
        return data.organisation_question || null;
      })
      .catch(function () { return null; /* keep the wording already on the page */ });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send({ text: input.value }, input.value);
  });

  input.addEventListener("keydown", function (event) {
    // Enter sends; Shift+Enter starts a new line; never interrupt an input method.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (typeof form.requestSubmit === "function") {
        form.requestSubmit();
      } else {
        form.dispatchEvent(new Event("submit", { cancelable: true }));
      }
    }
  });
  input.addEventListener("input", resizeInput);

  busy = true;
  setTyping(false);
  document.addEventListener("visibilitychange", pollNow);
  window.addEventListener("focus", pollNow);
  window.addEventListener("online", pollNow);

  Promise.all([loadWording(), loadHistory()]).then(function (results) {
    var history = results[1];
    if (!history.length) {
      showWelcome(results[0]);
    }
    var lastIn = -1;
    history.forEach(function (m, i) { if (m.direction === "in") { lastIn = i; } });
    history.forEach(function (m, i) {
      if (isId(m.id) && m.id > cursor) { cursor = m.id; }
      // Only the latest reply keeps its buttons: older ones no longer fit the conversation.
      addMessage(m.direction, String(m.text || ""), m.buttons, i > lastIn);
    });
    busy = false;
    ready = true;
    document.body.setAttribute("data-ready", "true");
    scrollToEnd();
    schedulePoll(POLL_MS);
  });
}());
