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
 * where there is one; readyState CLOSED means the client gave up for good.
 *
 * shared: true opens one connection per URL for all the tabs of an origin
 * that are the same subscriber: each tab asks the server its scope (a poll),
 * the tab that holds a Web Lock named after the scope and the URL connects
 * and passes each event, and the id the stream resumes from, to the others
 * over a BroadcastChannel; when it closes, another tab takes the lock and
 * resumes after the last id passed on. A refusal or a 204 ends every tab's
 * client with the error; a new login moves the tabs to a connection of the
 * new session. Without those APIs each tab connects on its own. Listeners,
 * lastEventId, readyState and close() are each tab's own.
 *
 * getToken: a function that returns a subscriber token (or a promise of one)
 * for a stream that needs ?token=: called before connecting, and again when
 * the server refuses the token (403: expired, or revoked by rotation).
 *
 * Loads as a classic script (defines window.EventStreamClient);
 * eventstream.mjs beside it exports it as a module; eventstream.d.ts types it.
 */
(function (global) {
  "use strict";

  var CONNECTING = 0, OPEN = 1, CLOSED = 2;
  var MAX_BACKOFF = 30000;
  var SEEN = 1000;  // ids remembered to drop what a handover repeats

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
    this._getToken = options.getToken || null;
    this._token = null;
    this._refusals = 0;  // 403s in a row with a fresh token
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
    this.shared = !!options.shared && !!(global.navigator && global.navigator.locks) &&
      typeof global.BroadcastChannel === "function";
    if (this.shared) {
      this._startShared();
    } else if (transport === "eventsource") {
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
    this._listen(type);
  };

  // Receive events of `type` (a native EventSource needs each type named).
  proto._listen = function (type) {
    if (this._native) this._forward(type);
    if (!this.shared || this._listened[type]) return;
    this._listened[type] = true;
    if (this._inner) this._inner._listen(type);
    else if (this.readyState !== CLOSED) this._post({kind: "listen", types: [type]});
  };
  proto.removeEventListener = function (type, listener, options) {
    this._target.removeEventListener(type, listener, options);
  };
  proto.dispatchEvent = function (event) {
    if (this._tap) return this._tap(event);  // a shared connection's own
    var handler = this["on" + event.type];
    if (typeof handler === "function" && ["open", "message", "error"].indexOf(event.type) >= 0) {
      handler.call(this, event);
    }
    return this._target.dispatchEvent(event);
  };

  proto.close = function () {
    if (this.shared) this._leave();  // another tab takes over
    this.readyState = CLOSED;
    this._stopped = true;  // by the page: nothing reopens it
    if (this._native) this._native.close();
    if (this._abort) this._abort.abort();
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
  };

  // -- one connection shared by the tabs of an origin ----------------------------
  //
  // Tabs share only with tabs of the same subscriber: each first asks the
  // server for its scope (a poll with ?scope=, which passes authorize as any
  // request does), and names its Web Lock and BroadcastChannel after the
  // scope and the URL. The tab that holds the lock leads: it polls once (the
  // scope again, the events after the last id any tab passed on, and the id
  // to resume from), passes all that on, then opens the stream after it.
  // When the scope changes (a logout, another login), the tabs join the new
  // one; when the stream is refused or ends (204), every tab is told, and
  // the lock is free for the next tab, which asks on its own.

  proto._startShared = function () {
    var self = this;
    this._listened = {message: true};  // every type a tab listens to
    this._seen = [];
    this._seenKeys = {};
    this._inner = this._release = this._bus = this._lockAbort = null;
    this._scope = this._held = null;
    this._round = 0;  // one per join: what an older one started does nothing
    this._retry = 3000;
    this._failures = this._rescopes = 0;
    // A page kept in the back-forward cache or frozen lets go of the lock,
    // and joins again when it comes back.
    var away = function (e) { if (e.type === "freeze" || e.persisted) self._leave(); };
    var back = function (e) {
      if ((e.type === "resume" || e.persisted) && self.readyState !== CLOSED) self._join();
    };
    if (global.addEventListener) {
      global.addEventListener("pagehide", away);
      global.addEventListener("pageshow", back);
    }
    if (global.document && global.document.addEventListener) {
      global.document.addEventListener("freeze", away);
      global.document.addEventListener("resume", back);
    }
    this._join();
  };

  // Let go of everything shared: the lock (or the wait for it), the
  // connection, the channel, a request or a timer under way.
  proto._leave = function () {
    this._round += 1;
    if (this._lockAbort) this._lockAbort.abort();
    if (this._inner) this._inner.close();
    if (this._release) this._release();  // another tab takes over
    if (this._bus) this._bus.close();
    if (this._abort) this._abort.abort();
    if (this._timer !== null) clearTimeout(this._timer);
    this._inner = this._release = this._bus = this._lockAbort = this._abort = null;
    this._held = null;
    this._timer = null;
  };

  proto._post = function (message) {
    if (this._bus) this._bus.postMessage(message);
  };

  // Tell every tab, this one too.
  proto._tell = function (message) {
    this._post(message);
    this._onShared(message, true);
  };

  // Ask the scope, then wait for the lock of this scope's tabs.
  proto._join = function () {
    var self = this;
    this._leave();
    var round = this._round;
    this._ask(true, round).then(function (answer) {
      if (round !== self._round) return;
      if (answer.failed === undefined) {
        // What this tab missed (it was away) or asked for (?rewind=), and
        // the id it is at.
        self._catchUp(answer);
        return self._enter(answer.scope || "", round);
      }
      if (self._final(answer.failed)) return self._end(answer.failed, answer.message);
      self.readyState = CONNECTING;
      self._fail(answer.failed, answer.message);
      self._later(function () { self._join(); });
    });
  };

  proto._enter = function (scope, round) {
    var self = this;
    var name = "eventstream:" + scope + ":" + this.url;
    this._scope = scope;
    this._bus = new global.BroadcastChannel(name);
    // Events that come on the channel are held until this tab knows it
    // has every one before them (see _sync).
    this._held = [];
    this._syncing = false;
    this._bus.onmessage = function (e) {
      if (round !== self._round) return;
      var message = e.data;
      if (self._held === null) return self._onShared(message);
      if (message.kind === "event") return self._held.push(message);
      if (message.kind === "cursor") return self._sync(message.id, round);
      self._onShared(message);
    };
    this._post({kind: "hello"});
    // The types this tab listened to while it was asking its scope.
    this._post({kind: "listen", types: Object.keys(this._listened)});
    var abort = new AbortController();
    this._lockAbort = abort;
    global.navigator.locks.request(name, {signal: abort.signal}, function () {
      if (round !== self._round || self.readyState === CLOSED) return null;
      self._lockAbort = null;
      // Held until this tab closes or leaves.
      return new Promise(function (release) {
        self._release = release;
        self._lead(round);
      });
    }).catch(function () {});  // the wait was given up
  };

  // Pass a poll's events to this tab alone, once each; it is then at the
  // poll's id.
  proto._catchUp = function (answer) {
    for (var i = 0; i < answer.events.length; i++) {
      var item = answer.events[i];
      item = {kind: "event", type: item.event || "message", data: item.data, id: item.id};
      if (this._fresh(item)) this._onShared(item, true);
    }
    if (answer.lastEventId) this.lastEventId = answer.lastEventId;
  };

  // The first id the leader tells a joining tab: where the events held
  // since the tab joined follow on. A tab that was at another id polls
  // what came between (events published while it was joining) first.
  proto._sync = function (id, round) {
    var self = this;
    if (this._syncing) return;
    if (!this.lastEventId || id === this.lastEventId) {
      this.lastEventId = id;
      return this._releaseHeld();
    }
    this._syncing = true;
    var pages = 0;
    var next = function () {
      self._ask(true, round).then(function (answer) {
        if (round !== self._round || !self._syncing) return;  // it leads now
        if (answer.failed !== undefined || (answer.scope || "") !== self._scope) {
          return self._releaseHeld();
        }
        self._catchUp(answer);
        var reached = answer.events.some(function (item) { return item.id === id; });
        // A poll answers a page: ask for the next until the leader's id.
        if (answer.events.length && !reached && id !== self.lastEventId && ++pages < 100) {
          return next();
        }
        self._releaseHeld();
      });
    };
    next();
  };

  proto._releaseHeld = function () {
    var held = this._held || [];
    this._held = null;
    this._syncing = false;
    for (var i = 0; i < held.length; i++) this._onShared(held[i]);
  };

  // This tab holds the lock: poll once, pass on what the poll brought and
  // the id it ends at, then open the stream after that id.
  proto._lead = function (round) {
    var self = this;
    if (this._held) this._releaseHeld();  // its poll covers the rest
    this._post({kind: "leader"});
    this._ask(true, round).then(function (answer) {
      if (round !== self._round) return;
      if (answer.failed !== undefined) return self._lost(answer.failed, answer.message, round);
      if ((answer.scope || "") !== self._scope) return self._rescope();
      for (var i = 0; i < answer.events.length; i++) {
        var item = answer.events[i];
        self._pass({kind: "event", type: item.event || "message", data: item.data, id: item.id});
      }
      if (answer.lastEventId) self._tell({kind: "cursor", id: answer.lastEventId});
      self._connect(round);
    });
  };

  proto._connect = function (round) {
    var self = this;
    var url = new URL(this.url);
    if (this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    var inner = new EventStreamClient(url.href, {
      transport: this.transport, withCredentials: this.withCredentials,
      getToken: this._getToken,
    });
    this._inner = inner;
    inner._scope = this._scope;  // a long-poll answer that names another ends it
    inner._tap = function (event) {
      if (round !== self._round || inner !== self._inner) return true;
      if (event.type === "rescope") {
        self._rescope();
      } else if (event.type === "open") {
        self._failures = self._rescopes = 0;
        self._tell({kind: "state", type: "open", readyState: OPEN});
      } else if (event.type === "error") {
        self._lost(event.status || 0, event.message || "", round);
      } else {
        self._pass({kind: "event", type: event.type, data: event.data, id: event.lastEventId});
      }
      return true;
    };
    Object.keys(this._listened).forEach(function (type) { inner._listen(type); });
  };

  // The leader's connection failed: a refusal or a 204 ends every tab (the
  // lock is then free: a tab opened later asks on its own); anything else
  // is tried again, from a poll, after the last id passed on.
  proto._lost = function (status, message, round) {
    var self = this;
    if (this._inner) this._inner.close();
    this._inner = null;
    if (this._final(status)) {
      this._tell({kind: "state", type: "error", readyState: CLOSED, status: status, message: message});
      return;
    }
    this._tell({kind: "state", type: "error", readyState: CONNECTING, status: status, message: message});
    this._later(function () { if (round === self._round) self._lead(round); });
  };

  // The server names another scope now (the cookie changed): every tab of
  // this scope asks again and joins its own.
  proto._rescope = function () {
    var self = this;
    this._post({kind: "rescope"});
    // A scope that changes on every request (an app that writes the session
    // each time) shares nothing: ask again, but not in a loop.
    if (this._rescopes++ < 2) return this._join();
    this._leave();
    this._later(function () { self._join(); });
  };

  // As EventSource: a 204 or a 4xx answer is final.
  proto._final = function (status) {
    return status === 204 || (status >= 400 && status < 500);
  };

  proto._end = function (status, message) {
    this._leave();
    this.readyState = CLOSED;
    this._fail(status, message);
  };

  // Back off: retry, doubled for each failure in a row, capped, jittered.
  proto._later = function (fn) {
    var self = this;
    var delay = Math.min(MAX_BACKOFF, this._retry * Math.pow(2, this._failures));
    this._failures += 1;
    this._timer = setTimeout(function () {
      self._timer = null;
      fn();
    }, delay / 2 + Math.random() * delay / 2);
  };

  // One poll with the scope: resolves to the answer, or to {failed: status
  // (0: no answer), message}. A 403 with getToken is asked again once with
  // a fresh token.
  proto._ask = function (withCursor, round) {
    var self = this;
    return this._connectUrl(false).then(function (url) {
      if (!withCursor) url.searchParams.delete("lastEventId");
      url.searchParams.set("transport", "poll");
      url.searchParams.set("scope", "ask");  // not a subscriber yet: not present
      var abort = new AbortController();
      self._abort = abort;
      return fetch(url.href, {
        credentials: self.withCredentials ? "include" : "same-origin",
        headers: {Accept: "application/json"},
        cache: "no-store",
        signal: abort.signal,
      });
    }).then(function (response) {
      if (round !== self._round) return {failed: 0, message: ""};
      if (response.status === 200) {
        return response.json().then(function (answer) {
          self._refusals = 0;
          if (typeof answer.retry === "number") self._retry = answer.retry;
          return answer;
        });
      }
      if (response.status === 403 && self._getToken && self._refusals++ === 0) {
        self._token = null;
        return self._ask(withCursor, round);
      }
      return readMessage(response).then(function (message) {
        return {failed: response.status, message: message};
      });
    }).catch(function () {
      return {failed: 0, message: ""};
    });
  };

  // Pass an event of the leader's connection on, once.
  proto._pass = function (item) {
    if (this._fresh(item)) this._tell(item);
  };

  proto._onShared = function (message, own) {
    if (this.readyState === CLOSED) return;
    if (message.kind === "event") {
      if (!own && !this._fresh(message)) return;
      if (message.id) this.lastEventId = message.id;
      this.dispatchEvent(new MessageEvent(message.type, {
        data: message.data, lastEventId: message.id, origin: new URL(this.url).origin,
      }));
    } else if (message.kind === "cursor") {
      this.lastEventId = message.id;  // where the connection resumes, before any event
    } else if (message.kind === "state") {
      var was = this.readyState;
      if (message.readyState === CLOSED) this._leave();  // over for every tab
      this.readyState = message.readyState;
      if (message.type === "open" && was === OPEN) return;  // told again
      var event = new Event(message.type);
      if (message.type === "error") {
        event.status = message.status;
        event.message = message.message;
      }
      this.dispatchEvent(event);
    } else if (message.kind === "listen") {
      for (var i = 0; i < message.types.length; i++) {
        this._listened[message.types[i]] = true;
        if (this._inner) this._inner._listen(message.types[i]);
      }
    } else if (message.kind === "rescope") {
      this._join();
    } else if (message.kind === "leader" || message.kind === "hello") {
      // Every tab knows every type, so whichever leads next forwards them.
      this._post({kind: "listen", types: Object.keys(this._listened)});
      if (message.kind === "hello" && this._release) {
        // The newcomer resumes from here if it leads next.
        if (this.lastEventId) this._post({kind: "cursor", id: this.lastEventId});
        if (this._inner && this._inner.readyState === OPEN) {
          this._post({kind: "state", type: "open", readyState: OPEN});
        }
      }
    }
  };

  // Whether an event was not seen yet: at a handover the new connection may
  // repeat what the old one passed on. Events without an id pass.
  proto._fresh = function (item) {
    if (!item.id) return true;
    var key = item.id + "\n" + item.type + "\n" + item.data;
    if (this._seenKeys[key]) return false;
    this._seenKeys[key] = true;
    this._seen.push(key);
    if (this._seen.length > SEEN) delete this._seenKeys[this._seen.shift()];
    return true;
  };

  // -- native EventSource ----------------------------------------------------

  // The URL to connect to: with a fresh token where getToken is set, and
  // the cursor (a new EventSource cannot send Last-Event-ID itself).
  proto._connectUrl = function (fresh) {
    var self = this;
    var url = new URL(this.url);
    if (this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    if (!this._getToken) return Promise.resolve(url);
    var token = fresh || this._token === null
      ? Promise.resolve(this._getToken()).then(function (t) { return (self._token = t); })
      : Promise.resolve(this._token);
    return token.then(function (t) {
      url.searchParams.set("token", t);
      return url;
    });
  };

  // A 403 with a token: get a new one and connect again (not twice in a
  // row: a token the server refuses at once is not going to change).
  proto._renew = function (status) {
    if (status !== 403 || !this._getToken || this._stopped) return false;
    if (this._refusals++ > 0) return false;
    this.readyState = CONNECTING;
    this._token = null;
    if (this.transport === "eventsource") this._openNative();
    else this._schedule(0);
    return true;
  };

  proto._openNative = function () {
    var self = this;
    if (this._getToken) {
      this._connectUrl(false).then(function (url) {
        if (self.readyState !== CLOSED) self._openNativeAt(url.href);
      }, function () { self._fail(0, "getToken failed"); });
      return;
    }
    this._openNativeAt(this.url);
  };

  proto._openNativeAt = function (href) {
    var self = this;
    if (this._native) this._native.close();
    var types = Object.keys(this._types);  // forwarded from the one before
    this._types = {};
    var source = new global.EventSource(href, {withCredentials: this.withCredentials});
    this._native = source;
    types.forEach(function (type) { self._forward(type); });
    source.onopen = function () {
      self._refusals = 0;
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
    fetch(this._native ? this._native.url : this.url, {
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
      if (self._renew(response.status)) return;
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
    this._connectUrl(false).then(function (url) {
      if (self.readyState !== CLOSED) self._pollAt(url);
    }, function () { self._fail(0, "getToken failed"); });
  };

  proto._pollAt = function (url) {
    var self = this;
    url.searchParams.set("transport", this.transport);
    if (this._scope) url.searchParams.set("scope", "1");
    var abort = new AbortController();
    this._abort = abort;
    fetch(url.href, {
      credentials: this.withCredentials ? "include" : "same-origin",
      headers: {Accept: "application/json"},
      cache: "no-store",
      signal: abort.signal,
    }).then(function (response) {
      if (response.status === 403 && self._renew(403)) return null;
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
      if (self._scope && answer.scope !== self._scope) {
        // A shared connection's session changed: not for these tabs.
        self.close();
        self._tap(new Event("rescope"));
        return;
      }
      self._failures = 0;
      self._refusals = 0;
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
