// Test driver for real Hocuspocus clients (`@hocuspocus/provider`, unmodified).
//
// A long-lived Node process holding named shared sockets (one HocuspocusProviderWebsocket
// each) and named documents on them (one Y.Doc + one HocuspocusProvider, attached to a
// socket), controlled by JSON lines on stdin, as tests/js/yclient.mjs is: every request is
// `{"id": n, "cmd": "...", ...}`, every reply one line `{"id": n, "ok": true, ...}` or
// `{"id": n, "ok": false, "error": "..."}`. Requests run concurrently; closing stdin ends it.
//
// Driven from Python by tests/hocuspocus_client.py. Commands (every wait takes [timeoutMs],
// default 5000, and fails with the last value seen):
//   ping
//   socket {socket, url}             a HocuspocusProviderWebsocket; waits until it is open
//   socketStats {socket}             -> {status, opens, closeEvents, messages}
//   waitSocketClose {socket}         -> {code, reason} of the next close not yet consumed
//   destroySocket {socket}
//   open {name, socket, document, [token], [awareness], [wait='synced'|'auth'|'none']}
//       a HocuspocusProvider for `document`, attached to the socket
//       -> {clientId, scope, denied, synced}; wait 'synced' fails if the document is denied
//   set / delete {name, path, [value]}    path = [root, key, ...] as in yclient.mjs
//   burst {name, count, [prefix]}    `count` transactions, one key each
//   json {name, [root]} -> {json}; waitFor {name, path, equals}; waitJsonEquals {name, json}
//   awareness {name, state}; waitPeers {name, count, [match]} -> {states}
//   stats {name} -> {unsyncedChanges, synced, authenticated, scope, denials, closes, acks}
//   waitUnsynced {name, equals}      until provider.unsyncedChanges === equals
//   waitDenied {name} -> {reason};   waitClosed {name} -> {reason} (a Close from the server)
//   detach {name}                    provider.detach(): the client closes the document
//   destroy {name}

import { isDeepStrictEqual } from 'node:util'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { deepContains, describe, fail, isPlainObject, notify, serve, toY, waitUntil } from './lines.mjs'

process.setMaxListeners(0)

const SYNC_STATUS = 8

/** The Y.Map at path[0..] (every step a key of a Y.Map). */
const mapAt = (doc, path) => {
  let current = doc.getMap(path[0])
  for (const key of path.slice(1)) {
    current = current.get(key)
    if (!(current instanceof Y.Map)) fail(`${JSON.stringify(path)} is not a Y.Map`)
  }
  return current
}

const jsonAt = (doc, path) => {
  let value = doc.getMap(path[0]).toJSON()
  for (const key of path.slice(1)) {
    if (!isPlainObject(value) && !Array.isArray(value)) return undefined
    value = value[key]
    if (value === undefined) return undefined
  }
  return value
}

// -- sockets and documents -------------------------------------------------------------------

const sockets = new Map()
const docs = new Map()

const getSocket = (name) => sockets.get(name) ?? fail(`no socket ${describe(name)}`)
const getDoc = (name) => docs.get(name) ?? fail(`no document client ${describe(name)}`)

const peerStates = (client) => {
  const states = {}
  for (const [id, state] of client.provider.awareness.getStates()) {
    if (id !== client.doc.clientID && state != null) states[id] = state
  }
  return states
}

const commands = {
  ping: async () => ({ pong: true }),

  socket: async ({ socket, url, timeoutMs }) => {
    if (sockets.has(socket)) fail(`socket ${describe(socket)} exists`)
    const entry = { waiters: new Set(), opens: 0, closeEvents: [], closeCursor: 0, messages: 0 }
    class CountingWebSocket extends WebSocket {
      constructor (address, protocols) {
        super(address, protocols)
        this.on('open', () => { entry.opens++; notify(entry) })
        this.on('message', () => { entry.messages++ })
        this.on('close', (code, reason) => {
          entry.closeEvents.push({ code, reason: reason.toString() })
          notify(entry)
        })
        this.on('error', () => {})
      }
    }
    entry.provider = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: CountingWebSocket })
    entry.provider.on('status', () => notify(entry))
    sockets.set(socket, entry)
    await waitUntil(entry, {
      what: `socket ${describe(socket)} to open`,
      timeoutMs,
      check: () => (entry.opens > 0 ? true : undefined)
    })
    return {}
  },

  socketStats: async ({ socket }) => {
    const entry = getSocket(socket)
    const { status } = entry.provider
    return { status, opens: entry.opens, closeEvents: entry.closeEvents, messages: entry.messages }
  },

  waitSocketClose: async ({ socket, timeoutMs }) => {
    const entry = getSocket(socket)
    return waitUntil(entry, {
      what: `a close of socket ${describe(socket)}`,
      timeoutMs,
      check: () => (entry.closeCursor < entry.closeEvents.length ? entry.closeEvents[entry.closeCursor++] : undefined)
    })
  },

  destroySocket: async ({ socket }) => {
    getSocket(socket).provider.destroy()
    sockets.delete(socket)
    return {}
  },

  open: async (msg) => {
    const { name, document } = msg
    if (docs.has(name)) fail(`document client ${describe(name)} exists`)
    const entry = getSocket(msg.socket)
    const doc = new Y.Doc()
    const client = {
      name, doc, waiters: new Set(), denials: [], closes: [], closeCursor: 0, acks: { applied: 0, refused: 0 }, scope: null
    }
    const provider = new HocuspocusProvider({
      websocketProvider: entry.provider,
      name: document,
      document: doc,
      token: msg.token ?? null,
      onAuthenticated: ({ scope }) => { client.scope = scope; notify(client) },
      onAuthenticationFailed: ({ reason }) => { client.denials.push(reason); notify(client) },
      onSynced: () => notify(client),
      onUnsyncedChanges: () => notify(client),
      onAwarenessChange: () => notify(client),
      onClose: ({ event }) => { client.closes.push(event.reason); notify(client) },
      onMessage: ({ message }) => {
        // Count SyncStatus acknowledgements (name, type 8, applied).
        const decoder = message.decoder
        decoding.readVarString(decoder)
        if (decoding.readVarUint(decoder) === SYNC_STATUS) {
          if (decoding.readVarUint(decoder) === 1) client.acks.applied++
          else client.acks.refused++
        }
      }
    })
    client.provider = provider
    docs.set(name, client)
    doc.on('update', () => notify(client))
    if ('awareness' in msg) provider.awareness.setLocalState(msg.awareness)
    provider.attach() // a provider on a shared socket is attached by hand
    const wait = msg.wait ?? 'synced'
    if (wait !== 'none') {
      await waitUntil(client, {
        what: `${describe(document)} to ${wait === 'auth' ? 'be answered' : 'sync'}`,
        timeoutMs: msg.timeoutMs,
        check: () => {
          if (client.denials.length) {
            if (wait === 'synced') fail(`${describe(document)} was denied: ${client.denials[0]}`)
            return true
          }
          if (wait === 'auth' && client.scope !== null) return true
          return provider.isSynced ? true : undefined
        },
        describeLast: () => `scope=${client.scope}, synced=${provider.isSynced}`
      })
    }
    return { clientId: doc.clientID, scope: client.scope, denied: client.denials[0] ?? null, synced: provider.isSynced }
  },

  set: async ({ name, path, value }) => {
    const { doc } = getDoc(name)
    doc.transact(() => mapAt(doc, path.slice(0, -1)).set(path[path.length - 1], toY(value)))
    return {}
  },

  delete: async ({ name, path }) => {
    const { doc } = getDoc(name)
    doc.transact(() => mapAt(doc, path.slice(0, -1)).delete(path[path.length - 1]))
    return {}
  },

  burst: async ({ name, count, prefix }) => {
    const { doc } = getDoc(name)
    const state = doc.getMap('$state')
    for (let i = 0; i < count; i++) {
      doc.transact(() => state.set(`${prefix ?? 'k'}${i}`, i))
      if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve))
    }
    return {}
  },

  json: async ({ name, root }) => ({ json: getDoc(name).doc.getMap(root ?? '$state').toJSON() }),

  waitFor: async ({ name, path, equals, timeoutMs }) => {
    const client = getDoc(name)
    return waitUntil(client, {
      what: `${JSON.stringify(path)} == ${JSON.stringify(equals)} on ${describe(name)}`,
      timeoutMs,
      check: () => (isDeepStrictEqual(jsonAt(client.doc, path), equals) ? { value: equals } : undefined),
      describeLast: () => `last: ${describe(jsonAt(client.doc, path))}`
    })
  },

  waitJsonEquals: async ({ name, json, timeoutMs }) => {
    const client = getDoc(name)
    return waitUntil(client, {
      what: `$state == ${JSON.stringify(json)} on ${describe(name)}`,
      timeoutMs,
      check: () => (isDeepStrictEqual(client.doc.getMap('$state').toJSON(), json) ? {} : undefined),
      describeLast: () => `last: ${JSON.stringify(client.doc.getMap('$state').toJSON())}`
    })
  },

  awareness: async ({ name, state }) => {
    getDoc(name).provider.awareness.setLocalState(state ?? null)
    return {}
  },

  waitPeers: async ({ name, count, match, timeoutMs }) => {
    const client = getDoc(name)
    return waitUntil(client, {
      what: `${count} peer(s) on ${describe(name)}`,
      timeoutMs,
      check: () => {
        const states = peerStates(client)
        const values = Object.values(states)
        if (values.length !== count) return undefined
        if (match != null && !values.some((s) => deepContains(s, match))) return undefined
        return { states }
      },
      describeLast: () => `last: ${JSON.stringify(peerStates(client))}`
    })
  },

  stats: async ({ name }) => {
    const { provider, denials, closes, acks, scope } = getDoc(name)
    return {
      unsyncedChanges: provider.unsyncedChanges,
      synced: provider.isSynced,
      authenticated: provider.isAuthenticated,
      scope,
      denials,
      closes,
      acks
    }
  },

  waitUnsynced: async ({ name, equals, timeoutMs }) => {
    const client = getDoc(name)
    return waitUntil(client, {
      what: `unsyncedChanges == ${equals} on ${describe(name)}`,
      timeoutMs,
      check: () => (client.provider.unsyncedChanges === equals ? { acks: client.acks } : undefined),
      describeLast: () => `unsyncedChanges=${client.provider.unsyncedChanges}, acks=${JSON.stringify(client.acks)}`
    })
  },

  waitDenied: async ({ name, timeoutMs }) => {
    const client = getDoc(name)
    return waitUntil(client, {
      what: `${describe(name)} to be denied`,
      timeoutMs,
      check: () => (client.denials.length ? { reason: client.denials[0] } : undefined),
      describeLast: () => `scope=${client.scope}`
    })
  },

  waitClosed: async ({ name, timeoutMs }) => {
    const client = getDoc(name)
    return waitUntil(client, {
      what: `a Close of ${describe(name)}`,
      timeoutMs,
      check: () => (client.closeCursor < client.closes.length ? { reason: client.closes[client.closeCursor++] } : undefined)
    })
  },

  detach: async ({ name }) => {
    getDoc(name).provider.detach()
    return {}
  },

  destroy: async ({ name }) => {
    const client = getDoc(name)
    docs.delete(name)
    client.provider.destroy()
    client.doc.destroy()
    return {}
  }
}

// -- stdin/stdout loop ------------------------------------------------------------------------

serve('hpclient', commands, () => {
  for (const client of docs.values()) {
    try {
      client.provider.destroy()
    } catch {}
  }
  for (const entry of sockets.values()) {
    try {
      entry.provider.destroy()
    } catch {}
  }
})
