// hookrelay inspector: the live toggle of the events list. Without
// JavaScript the list is plain server-rendered HTML; with it, ticking
// "Live" opens the admin SSE stream (same origin, the session cookie
// authenticates it) and prepends each new event as a row.
(function () {
  'use strict';
  var box = document.getElementById('live');
  var body = document.getElementById('events-body');
  if (!box || !body) { return; }
  box.closest('.live-toggle').hidden = false;
  var status = document.getElementById('live-status');
  var source = null;
  var added = 0;

  function cell(tr, text) {
    var td = document.createElement('td');
    td.textContent = text === undefined || text === null ? '' : String(text);
    tr.appendChild(td);
    return td;
  }

  function prepend(env) {
    var tr = document.createElement('tr');
    tr.className = 'new';
    tr.setAttribute('data-id', env.id);
    cell(tr, env.received_at);
    cell(tr, env.provider + '/' + env.family + '/' + env.kind);
    cell(tr, env.app_id);
    cell(tr, '');
    cell(tr, 'new');
    var td = cell(tr, '');
    td.className = 'id';
    var a = document.createElement('a');
    a.href = '/ui/events/' + encodeURIComponent(env.id);
    a.textContent = env.id;
    td.appendChild(a);
    body.insertBefore(tr, body.firstChild);
    added += 1;
    if (status) { status.textContent = added + ' new event' + (added === 1 ? '' : 's'); }
  }

  function filters() {
    var params = new URLSearchParams(window.location.search);
    var out = new URLSearchParams();
    ['family', 'kind', 'app_id'].forEach(function (k) {
      var v = params.get(k);
      if (v) { out.set(k, v); }
    });
    var s = out.toString();
    return s ? '?' + s : '';
  }

  function start() {
    source = new EventSource('/api/events/stream' + filters());
    source.addEventListener('envelope', function (e) {
      try { prepend(JSON.parse(e.data)); } catch (err) { /* not an envelope */ }
    });
    source.addEventListener('open', function () { document.body.setAttribute('data-live', 'open'); });
  }

  function stop() {
    if (source) { source.close(); source = null; }
    document.body.removeAttribute('data-live');
  }

  box.addEventListener('change', function () { if (box.checked) { start(); } else { stop(); } });
  if (box.checked) { start(); }
}());
