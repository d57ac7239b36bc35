// The home page's "Live now": rooms and streams from the HTTP API, every 5 s. With access
// tokens on, the API needs an admin token: give it as ?token=… (it is kept in this tab only).
const $ = (s) => document.querySelector(s);
const params = new URLSearchParams(location.search);
const token = params.get('token') || sessionStorage.getItem('onair-admin-token');
if (params.get('token')) sessionStorage.setItem('onair-admin-token', params.get('token'));

const headers = token ? { Authorization: `Bearer ${token}` } : {};

function item(html) {
  const li = document.createElement('li');
  li.innerHTML = html;
  return li;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function get(path) {
  const r = await fetch(path, { headers });
  if (r.status === 401 || r.status === 403) throw Object.assign(new Error('auth'), { status: r.status });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

async function refresh() {
  try {
    const [rooms, streams] = await Promise.all([get('/api/rooms'), get('/api/streams')]);
    const list = rooms.rooms ?? [];
    $('#room-count').textContent = String(list.length);
    $('#rooms').replaceChildren(...(list.length ? list.map((r) => item(
      `<a href="/room.html?room=${encodeURIComponent(r.name)}">${esc(r.name)}</a> — ${r.participants} `
      + `${r.participants === 1 ? 'participant' : 'participants'}`)) : [item('<span class="muted">none</span>')]));
    $('#stream-count').textContent = String(streams.length);
    $('#streams').replaceChildren(...(streams.length ? streams.map((s) => {
      const viewers = Object.entries(s.readers ?? {}).map(([p, n]) => `${n} ${p}`).join(', ') || 'no viewers';
      const link = `/watch.html?stream=${encodeURIComponent(s.name).replace(/%2F/g, '/')}`;
      return item(`<a href="${link}">${esc(s.name)}</a> — from ${esc(s.source)}, `
        + `${s.bitrate_kbps ?? 0} kbit/s; readers: ${esc(viewers)}`);
    }) : [item('<span class="muted">none</span>')]));
    $('#live-status').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('#live-status').textContent = e.status
      ? 'Access tokens are on: open this page with ?token=ADMIN_TOKEN (onair token --admin) to see what is live.'
      : `could not load: ${e.message}`;
  }
}

refresh();
setInterval(refresh, 5000);
