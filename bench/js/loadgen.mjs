// Load generator for `make bench` / `make bench-compare` (driven by bench/loadgen.py).
//
//   node bench/js/loadgen.mjs '<json spec>'
//
// Clients are the stock browser stack: a Y.Doc per client and a `y-websocket` WebsocketProvider
// (or, for servers that speak the Hocuspocus protocol, the HocuspocusProvider), each over its
// own `ws` socket; or, with `docsPerSocket` (Hocuspocus only), the clients of a tab sharing one
// HocuspocusProviderWebsocket, as a page showing many panels does. REST load uses node:http
// with keep-alive.
//
// Talks JSON lines. stdout: {"event": "barrier", "name": …} at each phase boundary, then waits
// for one line on stdin ({"cmd": "go", …}) so that the driver can sample the server's CPU and
// memory (or restart it) between phases; {"event": "result", …} at the end; {"event": "log"} for
// progress. Every wait is bounded: a workload never hangs, it reports what it saw.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import WebSocket from 'ws'
import http from 'node:http'
import readline from 'node:readline'
import { createHash } from 'node:crypto'
import { performance, monitorEventLoopDelay } from 'node:perf_hooks'

// ---------------------------------------------------------------------------------------------
// plumbing

// Every WebsocketProvider adds a process 'exit' listener (to say goodbye to its peers).
process.setMaxListeners(0)

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const log = (message) => emit({ event: 'log', message })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const stdinLines = []
const stdinWaiters = []
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  const waiter = stdinWaiters.shift()
  if (waiter) waiter(line)
  else stdinLines.push(line)
})
rl.on('close', () => {
  // The driver went away: nothing left to report to.
  setTimeout(() => process.exit(3), 100).unref()
})

const nextCommand = () =>
  new Promise((resolve) => {
    const line = stdinLines.shift()
    if (line !== undefined) resolve(JSON.parse(line))
    else stdinWaiters.push((l) => resolve(JSON.parse(l)))
  })

/** Tell the driver a phase boundary was reached; wait for its go (it may carry new fields). */
const barrier = async (name, info = {}) => {
  emit({ event: 'barrier', name, t: performance.now(), ...info })
  const command = await nextCommand()
  if (command.cmd !== 'go') throw new Error(`expected go after barrier ${name}, got ${JSON.stringify(command)}`)
  return command
}

/** Poll `check` every `everyMs` until it is true, `timeoutMs` passes, or no progress for `stallMs`. */
const waitUntil = async (check, { timeoutMs, everyMs = 20, progress = null, stallMs = Infinity }) => {
  const start = performance.now()
  let last = progress ? progress() : 0
  let lastChange = start
  while (!check()) {
    const now = performance.now()
    if (now - start > timeoutMs) return false
    if (progress) {
      const value = progress()
      if (value !== last) {
        last = value
        lastChange = now
      } else if (now - lastChange > stallMs) return false
    }
    await sleep(everyMs)
  }
  return true
}

const percentiles = (values) => {
  const n = values.length
  if (n === 0) return { count: 0, p50: null, p95: null, p99: null, max: null, mean: null }
  const sorted = Float64Array.from(values).sort()
  const at = (q) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]
  let sum = 0
  for (const v of sorted) sum += v
  return { count: n, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[n - 1], mean: sum / n }
}

const round = (value, digits = 3) => (value == null ? null : Number(value.toFixed(digits)))
const roundStats = (stats) => Object.fromEntries(Object.entries(stats).map(([k, v]) => [k, k === 'count' ? v : round(v)]))

// ---------------------------------------------------------------------------------------------
// one collaborative client: a Y.Doc and the provider browsers would use with that server

/** What arrives on a socket (shared by the clients of a shared socket). */
const newWire = () => ({ messages: 0, bytes: 0, opens: 0, closeCodes: [] })

/** The `ws` client, counting into `wire`; like a browser, it offers permessage-deflate
 * unless told not to. */
const countingWebSocket = (wire, deflate) =>
  class CountingWebSocket extends WebSocket {
    constructor (address, protocols) {
      super(address, protocols, { perMessageDeflate: deflate })
      this.on('open', () => { wire.opens++ })
      this.on('message', (data) => {
        wire.messages++
        wire.bytes += data.length ?? data.byteLength ?? 0
      })
      this.on('close', (code) => { wire.closeCodes.push(code) })
      this.on('error', () => {}) // a refused socket reports through 'close' as well
    }
  }

/** One shared HocuspocusProviderWebsocket: the socket of a tab showing many panels. */
class SharedSocket {
  constructor (url, deflate) {
    this.wire = newWire()
    this.socket = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: countingWebSocket(this.wire, deflate) })
  }

  destroy () {
    this.socket.destroy()
  }
}

class Client {
  constructor (kind, url, room, params = {}, deflate = true, shared = null, namePrefix = '') {
    this.kind = kind
    this.room = room
    this.doc = new Y.Doc()
    this.map = this.doc.getMap('$state')
    this.wire = shared ? shared.wire : newWire()
    this.received = 0 // updates of other writers integrated (seen or merged)
    this.merged = 0 // integrated together with a later one: its value was never visible
    this.stale = 0 // a value older than one already seen (must not happen)
    this.lastSeq = new Map() // writer key -> last sequence number seen
    const CountingWebSocket = countingWebSocket(this.wire, deflate)
    let resolveSynced
    this.synced = new Promise((resolve) => { resolveSynced = resolve })
    this.isSynced = false
    const onSynced = () => {
      if (this.isSynced) return
      this.isSynced = true
      resolveSynced()
    }
    if (kind === 'hocuspocus' && shared) {
      this.provider = new HocuspocusProvider({ websocketProvider: shared.socket, name: namePrefix + room, document: this.doc })
      this.provider.attach()
      this.provider.on('synced', onSynced)
      if (this.provider.isSynced) onSynced()
    } else if (kind === 'hocuspocus') {
      this.provider = new HocuspocusProvider({
        url,
        name: namePrefix + room,
        document: this.doc,
        WebSocketPolyfill: CountingWebSocket
      })
      this.provider.on('synced', onSynced)
      if (this.provider.isSynced) onSynced()
    } else {
      this.provider = new WebsocketProvider(url, room, this.doc, {
        WebSocketPolyfill: CountingWebSocket,
        disableBc: true,
        params
      })
      this.provider.on('sync', (synced) => { if (synced) onSynced() })
    }
  }

  get bytes () { return this.wire.bytes }

  get connected () {
    if (this.kind === 'hocuspocus') return this.provider.configuration.websocketProvider.status === 'connected'
    return this.provider.wsconnected
  }

  destroy () {
    try {
      this.provider.destroy()
      this.doc.destroy()
    } catch (err) {
      log(`destroy failed: ${err?.message ?? err}`)
    }
  }
}

const clientUrl = (spec, index) => spec.urls[index % spec.urls.length]

/** Open clients with at most `concurrency` handshakes in flight; each waits for its first sync.
 * Client i connects to `spec.urls[slots[i] % urls]` (default: slot i, round-robin).
 * With `spec.docsPerSocket` (Hocuspocus), client i is a document on the shared socket of tab
 * floor(i / docsPerSocket), opened with the first of its documents.
 *
 * Each room is opened by one client before the others join it: pycrdt-websocket 0.16.5 leaves a
 * client hanging forever when it joins a room that another connection is still starting (its
 * YRoom.start holds a lock for the room's lifetime), and the same order is used for every server. */
const connectAll = async (spec, rooms, { concurrency, timeoutMs }, slots = null) => {
  const clients = new Array(rooms.length)
  const times = []
  let failed = 0
  const sockets = new Map() // tab -> SharedSocket
  const sharedFor = (index) => {
    if (!spec.docsPerSocket || spec.client !== 'hocuspocus') return null
    const tab = Math.floor(index / spec.docsPerSocket)
    if (!sockets.has(tab)) sockets.set(tab, new SharedSocket(clientUrl(spec, tab), spec.deflate ?? true))
    return sockets.get(tab)
  }
  const firsts = []
  const rest = []
  const opened = new Set()
  rooms.forEach((room, index) => {
    if (opened.has(room)) rest.push(index)
    else {
      opened.add(room)
      firsts.push(index)
    }
  })
  const wave = async (indexes) => {
    let next = 0
    const worker = async () => {
      while (next < indexes.length) {
        const index = indexes[next++]
        const start = performance.now()
        const client = new Client(
          spec.client, clientUrl(spec, slots ? slots[index] : index), rooms[index], spec.params ?? {},
          spec.deflate ?? true, sharedFor(index), spec.namePrefix ?? ''
        )
        clients[index] = client
        const ok = await Promise.race([client.synced.then(() => true), sleep(timeoutMs).then(() => false)])
        if (ok) times.push(performance.now() - start)
        else failed++
      }
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, indexes.length)) }, worker))
  }
  await wave(firsts)
  await wave(rest)
  return { clients, times, failed, sockets: [...sockets.values()] }
}

// JSON with object keys sorted at every level. Servers built on yrs (ours, pycrdt-websocket)
// relay the update as their doc integrated it, and yrs keeps a JSON object's keys in hash
// order: a receiver's {t, s} is the sender's {s, t}. Equal as JSON, so compare as JSON.
const canonical = (value) => {
  if (Array.isArray(value)) return '[' + value.map(canonical).join(',') + ']'
  if (value !== null && typeof value === 'object') {
    return '{' + Object.keys(value).sort().map((k) => JSON.stringify(k) + ':' + canonical(value[k])).join(',') + '}'
  }
  return JSON.stringify(value)
}

const docDigest = (doc) => {
  const sv = Buffer.from(Y.encodeStateVector(doc)).toString('base64')
  const json = doc.getMap('$state').toJSON()
  const keys = Object.keys(json).sort()
  const hash = createHash('sha1')
  for (const key of keys) hash.update(key + '=' + canonical(json[key]) + ';')
  return { sv, hash: hash.digest('hex'), size: keys.length }
}

/** Closes seen by the clients' sockets (a shared socket counted once). */
const closesOf = (clients) => {
  let closes = 0
  for (const wire of new Set(clients.filter(Boolean).map((c) => c.wire))) closes += wire.closeCodes.length
  return closes
}

const socketsOf = (clients) => new Set(clients.filter(Boolean).map((c) => c.wire)).size

// ---------------------------------------------------------------------------------------------
// fan-out (and hot room): R rooms × C writers; every update is seen by the C − 1 others.
//
// Writer w overwrites its own key of the panel's `$state` map, `w<n>`: {s: sequence, t: send
// time (performance.now(), this process's clock)}, so a room's doc stays the size of a real
// panel. A receiver's map observer fires when an update is integrated: latency = now − t. Yjs
// integrates a writer's updates in order and never skips one, so seeing sequence s means 0…s
// all arrived (one that arrived in the same transaction as a later one is counted as merged:
// delivered, but with no latency sample). Lost = expected − integrated at the end.

const fanout = async (spec) => {
  const { rooms, clientsPerRoom, updatesPerClient, ratePerClient } = spec
  // Every client first sends `warmupSeconds` worth of updates: delivered and checked like the
  // rest, but left out of the latency figures and of the measured CPU window (JIT warm-up of
  // both sides, first-use allocations). The driver's CPU window opens at the 'measure' barrier.
  const warmupUpdates = Math.round((spec.warmupSeconds ?? 0) * ratePerClient)
  const totalPerClient = warmupUpdates + updatesPerClient
  const roomOf = []
  for (let r = 0; r < rooms; r++) for (let c = 0; c < clientsPerRoom; c++) roomOf.push(`${spec.roomPrefix}-${r}`)
  // Clients of a room are spread over the connect order so that rooms fill up together.
  const order = []
  for (let c = 0; c < clientsPerRoom; c++) for (let r = 0; r < rooms; r++) order.push(r * clientsPerRoom + c)
  const roomsInOrder = order.map((i) => roomOf[i])
  // With several URLs (replicas), client c of room r goes to URL (r + c) mod URLs: the clients
  // of every room are spread over the replicas, and each replica opens as many rooms. (Slot =
  // connect position would put a whole room on one replica whenever URLs divide the rooms.)
  const slots = order.map((i) => Math.floor(i / clientsPerRoom) + (i % clientsPerRoom))
  const connectStart = performance.now()
  const { clients: ordered, times, failed, sockets } = await connectAll(spec, roomsInOrder, spec.connect, slots)
  const connectMs = performance.now() - connectStart
  const clients = new Array(ordered.length)
  order.forEach((i, k) => { clients[i] = ordered[k] })

  const latencies = []
  const sendTimes = []
  let deliveries = 0
  let measured = 0 // deliveries of updates sent after the warm-up
  let lastDelivery = 0
  clients.forEach((client) => {
    client.map.observe((event) => {
      if (event.transaction.local) return
      const now = performance.now()
      for (const key of event.keysChanged) {
        const value = client.map.get(key)
        if (value == null || typeof value.t !== 'number') continue
        const last = client.lastSeq.get(key) ?? -1
        if (value.s <= last) {
          client.stale++
          continue
        }
        client.merged += value.s - last - 1
        client.received += value.s - last
        deliveries += value.s - last
        client.lastSeq.set(key, value.s)
        if (value.s >= warmupUpdates) {
          measured += Math.min(value.s - last, value.s - warmupUpdates + 1)
          latencies.push(now - value.t)
          sendTimes.push(value.t)
        }
        lastDelivery = now
      }
    })
  })
  const closesBefore = closesOf(clients)
  await barrier('connected', { connectMs, failed })

  const interval = 1000 / ratePerClient
  const sendLag = []
  let sent = 0
  let sentMeasured = 0
  const writer = (client, id) =>
    new Promise((resolve) => {
      let seq = 0
      const start = performance.now() + Math.random() * interval
      const tick = () => {
        while (seq < totalPerClient && performance.now() >= start + seq * interval) {
          const now = performance.now()
          sendLag.push(now - (start + seq * interval))
          const s = seq
          client.doc.transact(() => client.map.set(id, { s, t: performance.now() }))
          seq++
          sent++
          if (s >= warmupUpdates) sentMeasured++
        }
        if (seq >= totalPerClient) return resolve()
        setTimeout(tick, Math.max(0, start + seq * interval - performance.now()))
      }
      setTimeout(tick, Math.max(0, start - performance.now()))
    })
  const loopDelay = monitorEventLoopDelay({ resolution: 5 })
  loopDelay.enable()
  const sendStart = performance.now()
  let measureStart = sendStart
  const warm = sleep(warmupUpdates * interval).then(async () => {
    measureStart = performance.now()
    await barrier('measure')
  })
  await Promise.all(clients.map((client, i) => writer(client, `w${i}`)))
  await warm
  const sendMs = performance.now() - measureStart
  const expected = clients.length * (clientsPerRoom - 1) * totalPerClient
  const expectedMeasured = clients.length * (clientsPerRoom - 1) * updatesPerClient
  const complete = await waitUntil(() => deliveries >= expected, {
    timeoutMs: spec.quiesceTimeoutMs,
    everyMs: 20,
    progress: () => deliveries,
    stallMs: spec.stallMs
  })
  loopDelay.disable()
  const done = await barrier('done', { deliveries, complete })
  void done

  // Convergence: every doc of a room must be identical (state vector and content).
  let diverged = 0
  let wrongSize = 0
  let divergedSample = null
  const byRoom = new Map()
  clients.forEach((client, i) => {
    const list = byRoom.get(roomOf[i]) ?? []
    list.push(client)
    byRoom.set(roomOf[i], list)
  })
  for (const list of byRoom.values()) {
    const digests = list.map((c) => docDigest(c.doc))
    const first = digests[0]
    if (digests.some((d) => d.sv !== first.sv || d.hash !== first.hash)) {
      if (diverged === 0) divergedSample = list.map((c, i) => ({ ...digests[i], state: c.map.toJSON() }))
      diverged++
    }
    if (first.size !== clientsPerRoom) wrongSize++
  }
  const lostByRoom = {}
  clients.forEach((client, i) => {
    const lost = (clientsPerRoom - 1) * totalPerClient - client.received
    if (lost > 0) lostByRoom[roomOf[i]] = (lostByRoom[roomOf[i]] ?? 0) + lost
  })
  // Latency by second of send time: shows a backlog building up (or a stall) during the run.
  const buckets = new Map()
  latencies.forEach((latency, i) => {
    const second = Math.floor((sendTimes[i] - measureStart) / 1000)
    const list = buckets.get(second) ?? []
    list.push(latency)
    buckets.set(second, list)
  })
  const latencyTimeline = [...buckets.keys()].sort((a, b) => a - b).map((second) => {
    const stats = percentiles(buckets.get(second))
    return [second, stats.count, round(stats.p50, 1), round(stats.p99, 1), round(stats.max, 1)]
  })
  const result = {
    clients: clients.length,
    sockets: socketsOf(clients),
    lostByRoom,
    latencyTimeline,
    connect: { ms: round(connectMs), failed, perClient: roundStats(percentiles(times)) },
    sent,
    sentMeasured,
    warmupUpdatesPerClient: warmupUpdates,
    expectedDeliveries: expected,
    deliveries,
    lost: expected - deliveries,
    measuredDeliveries: measured,
    expectedMeasuredDeliveries: expectedMeasured,
    merged: clients.reduce((n, c) => n + c.merged, 0),
    stale: clients.reduce((n, c) => n + c.stale, 0),
    latencyMs: roundStats(percentiles(latencies)),
    sendMs: round(sendMs),
    deliveryWindowMs: round(lastDelivery - measureStart),
    sendLagMs: roundStats(percentiles(sendLag)),
    // How late this process's event loop ran (a busy load generator delays what it observes).
    loopDelayMs: {
      p50: round(loopDelay.percentile(50) / 1e6),
      p99: round(loopDelay.percentile(99) / 1e6),
      max: round(loopDelay.max / 1e6)
    },
    roomsDiverged: diverged,
    roomsWrongSize: wrongSize,
    divergedSample,
    converged: diverged === 0 && wrongSize === 0 && deliveries === expected,
    closesDuringRun: closesOf(clients) - closesBefore
  }
  for (const client of clients) client.destroy()
  for (const socket of sockets) socket.destroy()
  await sleep(200)
  return result
}

// ---------------------------------------------------------------------------------------------
// connections: thousands of idle clients over hundreds of rooms

const connections = async (spec) => {
  const { clients: count, rooms } = spec
  const roomNames = Array.from({ length: count }, (_, i) => `${spec.roomPrefix}-${i % rooms}`)
  await barrier('baseline')
  const start = performance.now()
  const { clients, times, failed, sockets } = await connectAll(spec, roomNames, spec.connect)
  const connectMs = performance.now() - start
  await barrier('connected', { connectMs, failed })
  const closesBefore = closesOf(clients)
  await sleep(spec.idleSeconds * 1000)
  const open = clients.filter((c) => c && c.connected).length
  await barrier('idle', { open })
  const result = {
    clients: count,
    sockets: socketsOf(clients),
    rooms,
    connected: count - failed,
    failed,
    connectMs: round(connectMs),
    connectPerSecond: round((count - failed) / (connectMs / 1000)),
    perClientMs: roundStats(percentiles(times)),
    openAfterIdle: open,
    closesWhileIdle: closesOf(clients) - closesBefore
  }
  for (const client of clients) if (client) client.destroy()
  for (const socket of sockets) socket.destroy()
  await sleep(500)
  return result
}

// ---------------------------------------------------------------------------------------------
// cold sync: one writer preloads a panel with N updates, then many clients join at once

const coldSync = async (spec) => {
  const { updates, keys, joiners, room } = spec
  const open = async (url) => {
    const client = new Client(spec.client, url, room, spec.params ?? {}, spec.deflate ?? true, null, spec.namePrefix ?? '')
    const ok = await Promise.race([client.synced.then(() => true), sleep(spec.connect.timeoutMs).then(() => false)])
    if (!ok) throw new Error(`a preload client could not sync with ${url}`)
    return client
  }
  const writer = await open(spec.urls[0])
  const watcher = await open(spec.urls[0])
  const lastKey = `k${(updates - 1) % keys}`
  const start = performance.now()
  for (let i = 0; i < updates; i++) {
    writer.doc.transact(() => writer.map.set(`k${i % keys}`, i))
    if (i % spec.chunk === spec.chunk - 1) await new Promise((resolve) => setImmediate(resolve))
  }
  const preloaded = await waitUntil(() => watcher.map.get(lastKey) === updates - 1, {
    timeoutMs: spec.preloadTimeoutMs,
    everyMs: 20
  })
  const preloadMs = performance.now() - start
  if (!preloaded) throw new Error(`the preload did not reach the watcher within ${spec.preloadTimeoutMs} ms`)
  watcher.destroy()
  if (!spec.keepWriter) writer.destroy()
  const go = await barrier('preloaded', { preloadMs })
  const urls = go.urls ?? spec.urls

  // The whole panel: each key holds the last value written to it.
  const expected = {}
  for (let j = 0; j < keys; j++) {
    const last = updates - 1 - ((updates - 1 - j) % keys)
    if (last >= 0) expected[`k${j}`] = last
  }
  const want = JSON.stringify(Object.keys(expected).sort().map((k) => [k, expected[k]]))
  const isFull = (client) => {
    const json = client.map.toJSON()
    return JSON.stringify(Object.keys(json).sort().map((k) => [k, json[k]])) === want
  }

  // Joiner j goes to URL j mod URLs (with replicas: spread over them). Each records whether it
  // had the whole panel when its provider said synced, and when it first had it: on a replica
  // that did not hold the panel, a joiner may sync before the replica got it all.
  const joinStart = performance.now()
  const clients = []
  const times = []
  const fullTimes = []
  let lastFullAt = null
  let fullAtSync = 0
  await Promise.all(
    Array.from({ length: joiners }, async (_, j) => {
      const t0 = performance.now()
      const client = new Client(spec.client, urls[j % urls.length], room, spec.params ?? {}, spec.deflate ?? true, null, spec.namePrefix ?? '')
      clients.push(client)
      let full = false
      const onUpdate = () => {
        if (full || !client.isSynced || !isFull(client)) return
        full = true
        lastFullAt = performance.now()
        fullTimes.push(lastFullAt - t0)
        client.doc.off('afterTransaction', onUpdate)
      }
      client.doc.on('afterTransaction', onUpdate)
      const ok = await Promise.race([client.synced.then(() => true), sleep(spec.connect.timeoutMs).then(() => false)])
      if (!ok) return
      times.push(performance.now() - t0)
      if (isFull(client)) fullAtSync++
      onUpdate()
    })
  )
  const allMs = performance.now() - joinStart
  // Joiners that synced without the whole panel: wait (bounded) for the rest to arrive, so that
  // the server's CPU for bringing every joiner up to date is inside the measured window.
  await waitUntil(() => fullTimes.length >= times.length, {
    timeoutMs: spec.fullStateTimeoutMs ?? 20_000,
    everyMs: 10
  })
  const allFullMs = fullTimes.length >= joiners ? lastFullAt - joinStart : null
  await barrier('joined', { allMs })
  let correct = 0
  for (const client of clients) if (isFull(client)) correct++
  const result = {
    updates,
    keys,
    joiners,
    preloadMs: round(preloadMs),
    preloadUpdatesPerSecond: round(updates / (preloadMs / 1000)),
    joined: times.length,
    failed: joiners - times.length,
    fullAtSync,
    full: fullTimes.length,
    fullMs: roundStats(percentiles(fullTimes)),
    allFullMs: round(allFullMs),
    correct,
    converged: correct === joiners,
    allJoinedMs: round(allMs),
    joinMs: roundStats(percentiles(times)),
    bytesPerJoiner: round(clients.reduce((n, c) => n + c.bytes, 0) / Math.max(1, clients.length), 0)
  }
  for (const client of clients) client.destroy()
  if (spec.keepWriter) writer.destroy()
  await sleep(200)
  return result
}

// ---------------------------------------------------------------------------------------------
// REST: open-loop request phases (a fixed rate, at most `concurrency` requests in flight)

const restRequest = (agent, base, method, path, body, headers) =>
  new Promise((resolve) => {
    const url = new URL(path, base)
    const start = performance.now()
    const payload = body == null ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body))
    const req = http.request(
      {
        agent,
        hostname: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method,
        headers: {
          ...headers,
          ...(payload ? { 'content-length': payload.length } : {})
        }
      },
      (res) => {
        const chunks = []
        res.on('data', (chunk) => chunks.push(chunk))
        res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - start, body: Buffer.concat(chunks) }))
      }
    )
    req.on('error', (err) => resolve({ status: 0, ms: performance.now() - start, error: err.message }))
    if (payload) req.write(payload)
    req.end()
  })

const runPhase = async (agent, spec, phase, makeRequest) => {
  const interval = 1000 / phase.rate
  const total = Math.round(phase.rate * phase.seconds)
  const latencies = []
  const statuses = {}
  let errors = 0
  const pending = []
  const start = performance.now()
  let issued = 0
  await new Promise((resolve) => {
    const tick = () => {
      while (issued < total && performance.now() >= start + issued * interval) {
        const index = issued++
        const { method, path, body, headers } = makeRequest(index)
        pending.push(
          restRequest(agent, spec.base, method, path, body, { ...spec.headers, ...headers }).then((res) => {
            statuses[res.status] = (statuses[res.status] ?? 0) + 1
            if (res.status >= 200 && res.status < 300) latencies.push(res.ms)
            else {
              errors++
              if (errors <= 3) log(`${phase.name}: HTTP ${res.status} ${res.error ?? res.body?.toString().slice(0, 200)}`)
            }
          })
        )
      }
      if (issued >= total) return resolve()
      setTimeout(tick, Math.max(0, start + issued * interval - performance.now()))
    }
    tick()
  })
  await Promise.all(pending)
  const elapsed = (performance.now() - start) / 1000
  return {
    requests: total,
    targetRate: phase.rate,
    achievedRate: round(total / elapsed),
    concurrency: phase.concurrency,
    errors,
    statuses,
    latencyMs: roundStats(percentiles(latencies))
  }
}

const rest = async (spec) => {
  const results = {}
  const json = { 'content-type': 'application/json' }
  const put = await restRequest(
    new http.Agent({ keepAlive: false }),
    spec.base,
    'PUT',
    spec.panelPath,
    { state: { $state: spec.initialState, $computed: {} } },
    { ...spec.headers, ...json }
  )
  if (put.status !== 200 && put.status !== 201) throw new Error(`PUT ${spec.panelPath}: HTTP ${put.status} ${put.body}`)
  let versions = 1
  for (const phase of spec.phases) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: phase.concurrency })
    const requestFor = (index) => {
      if (phase.kind === 'get') return { method: 'GET', path: spec.panelPath }
      if (phase.kind === 'patch') {
        const body = [{ op: 'add', path: `/$state/k${index % 20}`, value: index }]
        return { method: 'PATCH', path: spec.panelPath, body, headers: { 'content-type': 'application/json-patch+json' } }
      }
      // history: a page of `limit` entries at a random offset within the panel's history
      const offset = Math.floor(Math.random() * Math.max(1, versions - phase.limit))
      return { method: 'GET', path: `${spec.panelPath}/history?limit=${phase.limit}&offset=${offset}` }
    }
    if (phase.warmupSeconds > 0) {
      await runPhase(agent, spec, { ...phase, seconds: phase.warmupSeconds }, requestFor)
    }
    if (phase.kind === 'history') {
      const res = await restRequest(agent, spec.base, 'GET', `${spec.panelPath}/history?limit=1`, null, spec.headers)
      versions = JSON.parse(res.body.toString()).totalChanges
    }
    await barrier(`before:${phase.name}`)
    const result = await runPhase(agent, spec, phase, requestFor)
    await barrier(`after:${phase.name}`, { requests: result.requests })
    if (phase.kind === 'history') result.historyEntries = versions
    results[phase.name] = result
    agent.destroy()
  }
  return results
}

// ---------------------------------------------------------------------------------------------

const WORKLOADS = { fanout, connections, coldSync, rest }

const main = async () => {
  const spec = JSON.parse(process.argv[2])
  const run = WORKLOADS[spec.workload]
  if (!run) throw new Error(`unknown workload ${spec.workload}`)
  const result = await run(spec)
  emit({ event: 'result', result, node: process.version })
  rl.close()
  setTimeout(() => process.exit(0), 50)
}

process.on('unhandledRejection', (err) => {
  emit({ event: 'error', message: String(err?.stack ?? err) })
})

main().catch((err) => {
  emit({ event: 'error', message: String(err?.stack ?? err) })
  setTimeout(() => process.exit(2), 50)
})
