/*
 * flask-eventstream browser client: an EventSource that falls back to
 * long-polling by itself. No dependencies, no build step.
 *
 *   const source = new EventStreamClient("/events/news", {transport: "auto"});
 *   source.addEventListener("order", (e) => console.log(e.data, e.lastEventId));
 *
 * transport: "auto" (native EventSource where it exists, else long-polling),
 * "eventsource", "longpoll" or "poll". An "error" event carries `status` (the
 * HTTP status, 0 when there was no answer) and `message` (the server's reason)
 * where there is one; readyState CLOSED means the client gave up for good. Loads as a classic script (defines
 * window.EventStreamClient); eventstream.mjs beside it exports it as a module.
 */
(function (global) {
  "use strict";

  var CONNECTING = 0, OPEN = 1, CLOSED = 2;
  var MAX_BACKOFF = 30000;

  function EventStreamClient(url, options) {
    var target = new EventTarget();
    this._target = target;
    options = options || {};
    this.url = new URL(url, global.location.href).href;
    this.withCredentials = !!options.withCredentials;
    this.readyState = CONNECTING;
    this.lastEventId = "";
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this._types = {};  // event types forwarded from the native EventSource
    this._native = null;
    this._abort = null;
    this._timer = null;
    var transport = options.transport || "auto";
    if (["auto", "eventsource", "longpoll", "poll"].indexOf(transport) < 0) {
      throw new TypeError("EventStreamClient: unknown transport " + transport);
    }
    if (transport === "auto") {
      transport = typeof global.EventSource === "function" ? "eventsource" : "longpoll";
    }
    this.transport = transport;
    if (transport === "eventsource") {
      this._openNative();
    } else {
      this._retry = 3000;
      this._failures = 0;
      this._schedule(0);
    }
  }

  EventStreamClient.CONNECTING = CONNECTING;
  EventStreamClient.OPEN = OPEN;
  EventStreamClient.CLOSED = CLOSED;
  var proto = EventStreamClient.prototype;
  proto.CONNECTING = CONNECTING;
  proto.OPEN = OPEN;
  proto.CLOSED = CLOSED;

  proto.addEventListener = function (type, listener, options) {
    this._target.addEventListener(type, listener, options);
    if (this._native) this._forward(type);
  };
  proto.removeEventListener = function (type, listener, options) {
    this._target.removeEventListener(type, listener, options);
  };
  proto.dispatchEvent = function (event) {
    var handler = this["on" + event.type];
    if (typeof handler === "function" && ["open", "message", "error"].indexOf(event.type) >= 0) {
      handler.call(this, event);
    }
    return this._target.dispatchEvent(event);
  };

  proto.close = function () {
    this.readyState = CLOSED;
    if (this._native) this._native.close();
    if (this._abort) this._abort.abort();
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
  };

  // -- native EventSource ----------------------------------------------------

  proto._openNative = function () {
    var self = this;
    var source = new global.EventSource(this.url, {withCredentials: this.withCredentials});
    this._native = source;
    source.onopen = function () {
      self.readyState = OPEN;
      self.dispatchEvent(new Event("open"));
    };
    source.onerror = function () {
      if (source.readyState !== 2) {
        self.readyState = CONNECTING;
        self.dispatchEvent(new Event("error"));
        return;
      }
      // EventSource gave up (an answer other than a 200 stream) and hides
      // the answer: ask again to tell the page the status and the reason.
      self.readyState = CLOSED;
      self._probe();
    };
    this._forward("message");
  };

  // An error event that says why: `status` (0: no answer) and `message`.
  proto._fail = function (status, message) {
    var event = new Event("error");
    event.status = status;
    event.message = message;
    this.dispatchEvent(event);
  };

  proto._probe = function () {
    var self = this;
    var abort = new AbortController();
    fetch(this.url, {
      credentials: this.withCredentials ? "include" : "same-origin",
      headers: {Accept: "text/event-stream"},
      cache: "no-store",
      signal: abort.signal,
    }).then(function (response) {
      if (response.ok) {  // it answers now: the failure is gone
        abort.abort();
        self._fail(response.status, "");
        return;
      }
      return readMessage(response).then(function (message) {
        self._fail(response.status, message);
      });
    }).catch(function () {
      self._fail(0, "");
    });
  };

  // The reason an error answer gives: its text, or an HTML page's paragraphs.
  function readMessage(response) {
    var type = response.headers.get("Content-Type") || "";
    return response.text().then(function (text) {
      if (type.indexOf("html") >= 0 && typeof DOMParser === "function") {
        var page = new DOMParser().parseFromString(text, "text/html");
        var parts = page.querySelectorAll("p");
        text = parts.length
          ? Array.prototype.map.call(parts, function (p) { return p.textContent; }).join(" ")
          : page.body.textContent;
      }
      return text.trim().slice(0, 500);
    }, function () { return ""; });
  }

  proto._forward = function (type) {
    var self = this;
    if (this._types[type]) return;  // one forwarder per type
    this._types[type] = true;
    this._native.addEventListener(type, function (e) {
      self.lastEventId = e.lastEventId;
      self.dispatchEvent(new MessageEvent(type, {
        data: e.data, lastEventId: e.lastEventId, origin: e.origin,
      }));
    });
  };

  // -- polling and long-polling ----------------------------------------------

  proto._schedule = function (delay) {
    var self = this;
    if (this.readyState === CLOSED) return;
    this._timer = setTimeout(function () {
      self._timer = null;
      self._poll();
    }, delay);
  };

  proto._poll = function () {
    var self = this;
    if (this.readyState === CLOSED) return;
    var url = new URL(this.url);
    url.searchParams.set("transport", this.transport);
    if (this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    var abort = new AbortController();
    this._abort = abort;
    fetch(url.href, {
      credentials: this.withCredentials ? "include" : "same-origin",
      headers: {Accept: "application/json"},
      cache: "no-store",
      signal: abort.signal,
    }).then(function (response) {
      if (response.status === 204 || (response.status >= 400 && response.status < 500)) {
        // As EventSource does: a refusal is final.
        self.readyState = CLOSED;
        return readMessage(response).then(function (message) {
          self._fail(response.status, message);
          return null;
        });
      }
      if (!response.ok) {
        return readMessage(response).then(function (message) {
          var error = new Error(message);
          error.status = response.status;
          throw error;
        });
      }
      if (self.readyState === CONNECTING) {
        self.readyState = OPEN;
        self.dispatchEvent(new Event("open"));
      }
      return response.json();
    }).then(function (answer) {
      if (answer === null || self.readyState === CLOSED) return;
      self._failures = 0;
      if (typeof answer.retry === "number") self._retry = answer.retry;
      var origin = url.origin;
      for (var i = 0; i < answer.events.length && self.readyState !== CLOSED; i++) {
        var item = answer.events[i];
        self.lastEventId = item.id;
        self.dispatchEvent(new MessageEvent(item.event, {
          data: item.data, lastEventId: item.id, origin: origin,
        }));
      }
      if (answer.lastEventId) self.lastEventId = answer.lastEventId;
      self._schedule(self.transport === "poll" ? self._retry : 0);
    }).catch(function (error) {
      if (self.readyState === CLOSED) return;
      self.readyState = CONNECTING;
      self._fail(error && error.status || 0, error && error.status ? error.message : "");
      // Back off: retry, doubled for each failure in a row, capped, jittered.
      var delay = Math.min(MAX_BACKOFF, self._retry * Math.pow(2, self._failures));
      self._failures += 1;
      self._schedule(delay / 2 + Math.random() * delay / 2);
    });
  };

  global.EventStreamClient = EventStreamClient;
})(typeof window !== "undefined" ? window : globalThis);
