// Test driver for real Yjs clients.
//
// A long-lived Node process that holds named Yjs clients (one Y.Doc + one y-websocket
// WebsocketProvider + its awareness each) and raw `ws` sockets, controlled by JSON lines
// on stdin. Every request is `{"id": n, "cmd": "...", ...}`; every reply is one JSON line
// on stdout: `{"id": n, "ok": true, ...}` or `{"id": n, "ok": false, "error": "..."}`.
// Requests are handled concurrently, so a pending `waitFor` never blocks other commands.
// stdout carries replies only; diagnostics go to stderr. Closing stdin shuts the process down.
//
// Driven from Python by tests/yjs_client.py. Commands (optional fields in brackets;
// every wait takes [timeoutMs], default 5000, and on timeout replies ok:false with the last
// value seen):
//   ping
//   connect {name, url, room, [params], [protocols], [awareness], [waitSynced=true], [connect=true]}
//       -> {clientId, url, synced}; the socket URL is `${url}/${room}?${params}`
//   set {name, path, value}      path = [root, key | index, ...]; JSON objects/arrays become
//   delete {name, path}          Y.Map/Y.Array; intermediates must exist. delete -> {existed}
//   push {name, path, value}     append to the Y.Array at path
//   json {name, [roots]}         -> {json: {root: toJSON}} ($state, $computed, $meta)
//   waitFor {name, path, equals | missing: true} -> {value}
//   startWriting {name, hz, prefix}  a timer sets `$state[prefix + i] = i`, i = 0, 1, ... at
//       `hz` a second in the client's own doc, connected or not (a user typing through an
//       outage); stopWriting {name} -> {written}
//   waitJsonEquals {name, json, [root="$state"]} -> {json}
//   awareness {name, state}      setLocalState (null allowed)
//   peers {name}                 -> {clientId, states: {id: state}} (others only)
//   waitPeers {name, count, [match]} -> {states}
//   stats {name}                 -> counters, closeCodes, closeEvents, errors, synced, ...
//   disconnect {name} / reconnect {name, [params], [waitSynced=true], [refreshAwareness]}
//   waitClose {name}             -> {code, reason} of the next unconsumed server-side close
//   destroy {name}
//   rawConnect {name, url, [protocols], [headers]} -> {opened, protocol, httpStatus, error, close}
//   rawSend {name, base64 | text} / rawClose {name, [code], [reason]}
//   rawWaitClose {name} -> {code, reason}; rawMessages {name, [clear]} -> {messages: [base64]}
//   rawWaitMessages {name, count} -> {messages}

import { isDeepStrictEqual } from 'node:util'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { CommandError, deepContains, describe, fail, isPlainObject, notify, serve, toY, waitUntil } from './lines.mjs'

// Every WebsocketProvider adds a process 'exit' listener; many clients are expected.
process.setMaxListeners(0)

const DEFAULT_ROOTS = ['$state', '$computed', '$meta']
const LOCAL_ORIGIN = 'yclient'

// ---------------------------------------------------------------------------
// JSON helpers

/** JSON-safe copy of what Yjs returns from toJSON (bigint and binary content included). */
const plain = (value) => {
  if (typeof value === 'bigint') {
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString()
  }
  if (value instanceof Uint8Array) return Array.from(value)
  if (Array.isArray(value)) return value.map(plain)
  if (value !== null && typeof value === 'object') {
    const out = {}
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) out[k] = plain(v)
    }
    return out
  }
  return value
}

const asIndex = (key, length, allowEnd = false) => {
  const index = typeof key === 'string' && /^\d+$/.test(key) ? Number(key) : key
  if (!Number.isInteger(index) || index < 0) fail(`array index must be a non-negative integer, got ${describe(key)}`)
  const limit = allowEnd ? length : length - 1
  if (index > limit) fail(`array index ${index} out of range (length ${length})`)
  return index
}

const checkPath = (path, minLength) => {
  if (!Array.isArray(path) || path.length < minLength || typeof path[0] !== 'string') {
    fail(`path must be an array [root, key, ...] with at least ${minLength} element(s), got ${describe(path)}`)
  }
}

/** Walk a Yjs document from doc.getMap(path[0]) through Y.Map keys / Y.Array indexes. */
const navigateY = (doc, path) => {
  let current = doc.getMap(path[0])
  for (let i = 1; i < path.length; i++) {
    const key = path[i]
    const where = JSON.stringify(path.slice(0, i))
    let next
    if (current instanceof Y.Map) {
      if (typeof key !== 'string') fail(`key ${describe(key)} at ${where} must be a string (that is a Y.Map)`)
      if (!current.has(key)) fail(`missing key ${describe(key)} at ${where}`)
      next = current.get(key)
    } else if (current instanceof Y.Array) {
      next = current.get(asIndex(key, current.length))
    } else {
      fail(`cannot descend into ${where}: not a Y.Map or Y.Array`)
    }
    current = next
  }
  return current
}

const rootJSON = (doc, root) => {
  try {
    return plain(doc.getMap(root).toJSON())
  } catch (err) {
    fail(`root ${describe(root)} is not a Y.Map: ${err.message}`)
  }
}

/** The JSON value at path (navigating toJSON output), or undefined when absent. */
const jsonAt = (doc, path) => {
  let value = rootJSON(doc, path[0])
  for (const key of path.slice(1)) {
    if (Array.isArray(value)) {
      const index = typeof key === 'string' && /^\d+$/.test(key) ? Number(key) : key
      value = Number.isInteger(index) ? value[index] : undefined
    } else if (isPlainObject(value)) {
      value = Object.hasOwn(value, key) ? value[key] : undefined
    } else {
      return undefined
    }
    if (value === undefined) return undefined
  }
  return value
}

// ---------------------------------------------------------------------------
// Waiting

// ---------------------------------------------------------------------------
// Yjs clients

/** @type {Map<string, any>} */
const clients = new Map()
/** @type {Map<string, any>} */
const raws = new Map()

const getClient = (name) => clients.get(name) ?? fail(`no client named ${describe(name)}`)
const getRaw = (name) => raws.get(name) ?? fail(`no raw socket named ${describe(name)}`)

const byteLength = (data) => {
  if (Array.isArray(data)) return data.reduce((n, part) => n + part.byteLength, 0)
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength
}

const stringParams = (params) => {
  if (params == null) return {}
  if (!isPlainObject(params)) fail('params must be an object')
  const out = {}
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined) out[k] = String(v)
  }
  return out
}

const clientStats = (client) => {
  const { provider, doc } = client
  return {
    clientId: doc.clientID,
    synced: provider.synced,
    wsconnected: provider.wsconnected,
    wsconnecting: provider.wsconnecting,
    shouldConnect: provider.shouldConnect,
    url: provider.url,
    updatesReceived: client.updatesReceived,
    messagesReceived: client.messagesReceived,
    bytesReceived: client.bytesReceived,
    connects: client.connects,
    closeCodes: client.closeEvents.map((e) => e.code),
    closeEvents: client.closeEvents,
    localCloses: client.localCloses,
    errors: client.errors,
    terminalClose: client.terminalClose
  }
}

const waitSynced = (client, timeoutMs, what) => {
  const closesBefore = client.closeEvents.length
  return waitUntil(client, {
    what,
    timeoutMs,
    check: () => {
      if (client.provider.synced) return true
      if (client.terminalClose && client.terminalClose.index >= closesBefore) {
        const { code, reason } = client.terminalClose
        fail(`${what}: server closed the connection permanently (code ${code}, reason ${describe(reason)}); the provider stopped reconnecting`)
      }
      return undefined
    },
    describeLast: () => {
      const s = clientStats(client)
      return `url=${s.url} wsconnected=${s.wsconnected} closeCodes=${JSON.stringify(s.closeCodes)} errors=${JSON.stringify(s.errors.slice(-3))}`
    }
  })
}

const commands = {
  ping: async () => ({ node: process.version, pid: process.pid }),

  connect: async (msg) => {
    const { name, url, room } = msg
    if (typeof name !== 'string' || !name) fail('name must be a non-empty string')
    if (typeof url !== 'string' || typeof room !== 'string') fail('url and room must be strings')
    if (clients.has(name)) fail(`client ${describe(name)} already exists`)
    const doc = new Y.Doc()
    const client = {
      name,
      doc,
      provider: null,
      waiters: new Set(),
      updatesReceived: 0,
      messagesReceived: 0,
      bytesReceived: 0,
      connects: 0,
      closeEvents: [],
      closeCursor: 0,
      localCloses: 0,
      errors: [],
      terminalClose: null
    }
    // The ws client, counting what arrives on every socket this provider opens.
    class CountingWebSocket extends WebSocket {
      constructor (address, protocols) {
        super(address, protocols)
        client.connects++
        this.on('message', (data) => {
          client.messagesReceived++
          client.bytesReceived += byteLength(data)
        })
      }
    }
    const provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: CountingWebSocket,
      params: stringParams(msg.params),
      protocols: msg.protocols ?? [],
      disableBc: true,
      connect: false
    })
    client.provider = provider
    clients.set(name, client)

    doc.on('update', (_update, origin) => {
      if (origin === provider) client.updatesReceived++
      notify(client)
    })
    provider.awareness.on('change', () => notify(client))
    provider.on('sync', (synced) => {
      // What the doc holds at the moment the provider reports synced (the first time).
      if (synced && client.keysAtSync === undefined) client.keysAtSync = doc.getMap('$state').size
      notify(client)
    })
    provider.on('status', () => notify(client))
    provider.on('connection-error', (event) => {
      client.errors.push(event?.message ?? event?.error?.message ?? String(event))
      notify(client)
    })
    provider.on('connection-close', (event) => {
      // event is null when the provider closed the socket itself (disconnect/destroy/watchdog).
      if (event == null) client.localCloses++
      else client.closeEvents.push({ code: event.code, reason: String(event.reason ?? '') })
      notify(client)
    })
    provider.on('closed', (info) => {
      // 'closed' follows the matching 'connection-close': remember which close it was.
      client.terminalClose = {
        code: info.code,
        reason: String(info.reason ?? ''),
        index: client.closeEvents.length - 1
      }
      notify(client)
    })
    if ('awareness' in msg) provider.awareness.setLocalState(msg.awareness)

    if (msg.connect !== false) {
      provider.connect()
      if (msg.waitSynced !== false) await waitSynced(client, msg.timeoutMs, `client ${describe(name)} to sync`)
    }
    return {
      clientId: doc.clientID,
      url: provider.url,
      synced: provider.synced,
      keysAtSync: client.keysAtSync ?? null
    }
  },

  burst: async ({ name, count, prefix }) => {
    // `count` updates, one transaction each (as many sync update messages), as fast as the
    // socket takes them: a turn of the event loop every 200 so the provider sends them.
    const { doc } = getClient(name)
    const state = doc.getMap('$state')
    for (let i = 0; i < count; i++) {
      doc.transact(() => state.set(`${prefix}${i}`, i), LOCAL_ORIGIN)
      if (i % 200 === 199) await new Promise((resolve) => setImmediate(resolve))
    }
    return {}
  },

  startWriting: async ({ name, hz, prefix }) => {
    const client = getClient(name)
    if (client.writer) fail(`client ${describe(name)} is already writing`)
    const state = client.doc.getMap('$state')
    const writer = { written: 0, timer: null }
    writer.timer = setInterval(() => {
      const i = writer.written++
      client.doc.transact(() => state.set(`${prefix}${i}`, i), LOCAL_ORIGIN)
    }, 1000 / hz)
    client.writer = writer
    return {}
  },

  stopWriting: async ({ name }) => {
    const client = getClient(name)
    const writer = client.writer ?? fail(`client ${describe(name)} is not writing`)
    clearInterval(writer.timer)
    client.writer = null
    return { written: writer.written }
  },

  set: async ({ name, path, value }) => {
    const { doc } = getClient(name)
    checkPath(path, 2)
    doc.transact(() => {
      const parent = navigateY(doc, path.slice(0, -1))
      const key = path[path.length - 1]
      if (parent instanceof Y.Map) {
        if (typeof key !== 'string') fail(`key ${describe(key)} must be a string (parent is a Y.Map)`)
        parent.set(key, toY(value))
      } else if (parent instanceof Y.Array) {
        const index = asIndex(key, parent.length, true)
        if (index < parent.length) parent.delete(index, 1)
        parent.insert(index, [toY(value)])
      } else {
        fail(`parent of ${JSON.stringify(path)} is not a Y.Map or Y.Array`)
      }
    }, LOCAL_ORIGIN)
    return {}
  },

  delete: async ({ name, path }) => {
    const { doc } = getClient(name)
    checkPath(path, 2)
    let existed = false
    doc.transact(() => {
      const parent = navigateY(doc, path.slice(0, -1))
      const key = path[path.length - 1]
      if (parent instanceof Y.Map) {
        existed = parent.has(key)
        parent.delete(key)
      } else if (parent instanceof Y.Array) {
        parent.delete(asIndex(key, parent.length), 1)
        existed = true
      } else {
        fail(`parent of ${JSON.stringify(path)} is not a Y.Map or Y.Array`)
      }
    }, LOCAL_ORIGIN)
    return { existed }
  },

  push: async ({ name, path, value }) => {
    const { doc } = getClient(name)
    checkPath(path, 1)
    doc.transact(() => {
      const target = navigateY(doc, path)
      if (!(target instanceof Y.Array)) fail(`${JSON.stringify(path)} is not a Y.Array`)
      target.push([toY(value)])
    }, LOCAL_ORIGIN)
    return {}
  },

  json: async ({ name, roots }) => {
    const { doc } = getClient(name)
    const json = {}
    for (const root of roots ?? DEFAULT_ROOTS) json[root] = rootJSON(doc, root)
    return { json }
  },

  waitFor: async (msg) => {
    const client = getClient(msg.name)
    const { path } = msg
    checkPath(path, 1)
    const wantMissing = msg.missing === true
    if (!wantMissing && !('equals' in msg)) fail('waitFor needs `equals` (or `missing: true`)')
    const target = wantMissing ? '<missing>' : JSON.stringify(msg.equals)
    return waitUntil(client, {
      what: `${JSON.stringify(path)} == ${target} on client ${describe(msg.name)}`,
      timeoutMs: msg.timeoutMs,
      check: () => {
        const value = jsonAt(client.doc, path)
        if (wantMissing) return value === undefined ? { value: null } : undefined
        return value !== undefined && isDeepStrictEqual(value, msg.equals) ? { value } : undefined
      },
      describeLast: () => `last value: ${describe(jsonAt(client.doc, path))}`
    })
  },

  waitJsonEquals: async (msg) => {
    const client = getClient(msg.name)
    const root = msg.root ?? '$state'
    return waitUntil(client, {
      what: `${root} == ${JSON.stringify(msg.json)} on client ${describe(msg.name)}`,
      timeoutMs: msg.timeoutMs,
      check: () => {
        const value = rootJSON(client.doc, root)
        return isDeepStrictEqual(value, msg.json) ? { json: value } : undefined
      },
      describeLast: () => `last ${root}: ${describe(rootJSON(client.doc, root))}`
    })
  },

  awareness: async ({ name, state }) => {
    getClient(name).provider.awareness.setLocalState(state ?? null)
    return {}
  },

  peers: async ({ name }) => {
    const { provider, doc } = getClient(name)
    const states = {}
    for (const [id, state] of provider.awareness.getStates()) {
      if (id !== doc.clientID && state != null) states[id] = plain(state)
    }
    return { clientId: doc.clientID, states }
  },

  waitPeers: async (msg) => {
    const client = getClient(msg.name)
    const { count, match } = msg
    if (!Number.isInteger(count) || count < 0) fail('count must be a non-negative integer')
    const peerStates = () => {
      const states = {}
      for (const [id, state] of client.provider.awareness.getStates()) {
        if (id !== client.doc.clientID && state != null) states[id] = plain(state)
      }
      return states
    }
    return waitUntil(client, {
      what: `${count} peer(s)${match ? ` matching ${JSON.stringify(match)}` : ''} on client ${describe(msg.name)}`,
      timeoutMs: msg.timeoutMs,
      check: () => {
        const states = peerStates()
        const values = Object.values(states)
        if (values.length !== count) return undefined
        if (match != null && !values.some((s) => deepContains(s, match))) return undefined
        return { states }
      },
      describeLast: () => `last peer states: ${JSON.stringify(peerStates())}`
    })
  },

  stats: async ({ name }) => clientStats(getClient(name)),

  disconnect: async ({ name }) => {
    const client = getClient(name)
    client.provider.disconnect()
    return { wsconnected: client.provider.wsconnected }
  },

  reconnect: async (msg) => {
    const client = getClient(msg.name)
    if (msg.params !== undefined) client.provider.params = stringParams(msg.params)
    client.provider.connect()
    if (msg.waitSynced !== false) {
      await waitSynced(client, msg.timeoutMs, `client ${describe(msg.name)} to sync after reconnect`)
    }
    // y-websocket re-sends the local awareness state on open with an unchanged clock, which
    // peers that saw the disconnect's null state ignore (until the 15 s renewal). Opt-in fix:
    // setting the same state again bumps the clock and broadcasts it.
    const local = client.provider.awareness.getLocalState()
    if (msg.refreshAwareness && local !== null) client.provider.awareness.setLocalState(local)
    return { synced: client.provider.synced, url: client.provider.url }
  },

  waitClose: async (msg) => {
    const client = getClient(msg.name)
    return waitUntil(client, {
      what: `a close event on client ${describe(msg.name)}`,
      timeoutMs: msg.timeoutMs,
      check: () => {
        if (client.closeCursor >= client.closeEvents.length) return undefined
        return client.closeEvents[client.closeCursor++]
      },
      describeLast: () => `wsconnected=${client.provider.wsconnected}, localCloses=${client.localCloses}`
    })
  },

  destroy: async ({ name }) => {
    const client = getClient(name)
    clients.delete(name)
    if (client.writer) clearInterval(client.writer.timer)
    for (const waiter of [...client.waiters]) waiter.cancel('client destroyed')
    client.provider.destroy()
    client.doc.destroy()
    return {}
  },

  // -------------------------------------------------------------------------
  // Raw sockets (plain `ws`, no Yjs): for protocol-level tests.

  rawConnect: async (msg) => {
    const { name, url } = msg
    if (typeof name !== 'string' || !name || typeof url !== 'string') fail('name and url must be strings')
    const existing = raws.get(name)
    if (existing && existing.close === null) fail(`raw socket ${describe(name)} is still open`)
    const ws = new WebSocket(url, msg.protocols ?? [], msg.headers ? { headers: msg.headers } : {})
    const raw = { ws, waiters: new Set(), messages: [], opened: false, close: null, errors: [] }
    raws.set(name, raw)
    ws.on('open', () => {
      raw.opened = true
      notify(raw)
    })
    ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
      raw.messages.push({ buf, isBinary })
      notify(raw)
    })
    ws.on('error', (err) => {
      raw.errors.push(err.message)
      notify(raw)
    })
    ws.on('close', (code, reason) => {
      raw.close = { code, reason: reason.toString() }
      notify(raw)
    })
    await waitUntil(raw, {
      what: `raw socket ${describe(name)} to open`,
      timeoutMs: msg.timeoutMs,
      check: () => (raw.opened || raw.close !== null ? true : undefined)
    })
    const status = raw.errors.map((e) => /Unexpected server response: (\d+)/.exec(e)).find(Boolean)
    return {
      opened: raw.opened,
      protocol: ws.protocol,
      httpStatus: status ? Number(status[1]) : null,
      error: raw.errors[0] ?? null,
      close: raw.close
    }
  },

  rawSend: async ({ name, base64, text }) => {
    const { ws } = getRaw(name)
    if (ws.readyState !== WebSocket.OPEN) fail(`raw socket ${describe(name)} is not open (readyState ${ws.readyState})`)
    await new Promise((resolve, reject) => {
      const done = (err) => (err ? reject(err) : resolve())
      if (typeof text === 'string') ws.send(text, { binary: false }, done)
      else if (typeof base64 === 'string') ws.send(Buffer.from(base64, 'base64'), { binary: true }, done)
      else reject(new CommandError('rawSend needs base64 or text'))
    })
    return {}
  },

  rawClose: async ({ name, code, reason }) => {
    const { ws } = getRaw(name)
    ws.close(code ?? 1000, reason ?? '')
    return {}
  },

  rawWaitClose: async ({ name, timeoutMs }) => {
    const raw = getRaw(name)
    return waitUntil(raw, {
      what: `raw socket ${describe(name)} to close`,
      timeoutMs,
      check: () => raw.close ?? undefined,
      describeLast: () => `readyState=${raw.ws.readyState}, ${raw.messages.length} message(s) received`
    })
  },

  rawMessages: async ({ name, clear }) => {
    const raw = getRaw(name)
    const messages = raw.messages.map((m) => m.buf.toString('base64'))
    if (clear) raw.messages = []
    return { messages }
  },

  rawWaitMessages: async ({ name, count, timeoutMs }) => {
    const raw = getRaw(name)
    if (!Number.isInteger(count) || count < 0) fail('count must be a non-negative integer')
    return waitUntil(raw, {
      what: `${count} message(s) on raw socket ${describe(name)}`,
      timeoutMs,
      check: () => (raw.messages.length >= count ? { messages: raw.messages.map((m) => m.buf.toString('base64')) } : undefined),
      describeLast: () => `${raw.messages.length} received, close=${JSON.stringify(raw.close)}`
    })
  }
}

serve('yclient', commands, () => {
  for (const client of clients.values()) {
    try {
      client.provider.destroy()
      client.doc.destroy()
    } catch (err) {
      console.error('yclient: error while destroying', client.name, err)
    }
  }
  clients.clear()
  for (const raw of raws.values()) {
    try {
      raw.ws.terminate()
    } catch {}
  }
})
