// What the test drivers share (tests/js/yclient.mjs: y-websocket clients; tests/js/hpclient.mjs:
// Hocuspocus providers): command errors, waits on a client's state, JSON -> Y types, and the
// JSON-lines loop. A request is `{"id": n, "cmd": "...", ...}` on stdin; its reply one line
// `{"id": n, "ok": true, ...}` or `{"id": n, "ok": false, "error": "..."}` on stdout. Requests
// run concurrently; closing stdin calls the driver's shutdown and exits.

import readline from 'node:readline'
import { isDeepStrictEqual } from 'node:util'
import * as Y from 'yjs'

export const DEFAULT_TIMEOUT_MS = 5000

export class CommandError extends Error {}

/** @param {string} message */
export const fail = (message) => {
  throw new CommandError(message)
}

export const describe = (value) => (value === undefined ? '<missing>' : JSON.stringify(value))
export const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

/** True when `actual` contains every field of `expected` (recursively for objects). */
export const deepContains = (actual, expected) => {
  if (isPlainObject(expected)) {
    if (!isPlainObject(actual)) return false
    return Object.entries(expected).every(([k, v]) => k in actual && deepContains(actual[k], v))
  }
  return isDeepStrictEqual(actual, expected)
}

/** JSON -> Y types: objects become Y.Map, arrays Y.Array, the rest stays as is. */
export const toY = (value) => {
  if (Array.isArray(value)) {
    const array = new Y.Array()
    array.push(value.map(toY))
    return array
  }
  if (isPlainObject(value)) {
    const map = new Y.Map()
    for (const [k, v] of Object.entries(value)) map.set(k, toY(v))
    return map
  }
  return value
}

/**
 * Resolve with check()'s result once it is not undefined. check runs now and on every
 * notify() of the owner (anything with a `waiters` Set); a timeout rejects with
 * describeLast()'s text.
 */
export const waitUntil = (owner, { check, timeoutMs, what, describeLast }) =>
  new Promise((resolve, reject) => {
    const limit = timeoutMs ?? DEFAULT_TIMEOUT_MS
    let timer = null
    const waiter = {
      check: () => {
        let result
        try {
          result = check()
        } catch (err) {
          finish()
          reject(err)
          return
        }
        if (result !== undefined) {
          finish()
          resolve(result)
        }
      },
      cancel: (reason) => {
        finish()
        reject(new CommandError(`${what}: ${reason}`))
      }
    }
    const finish = () => {
      clearTimeout(timer)
      owner.waiters.delete(waiter)
    }
    timer = setTimeout(() => {
      finish()
      let last = ''
      try {
        last = describeLast ? `; ${describeLast()}` : ''
      } catch (err) {
        last = `; (${err.message})`
      }
      reject(new CommandError(`timeout after ${limit} ms waiting for ${what}${last}`))
    }, limit)
    owner.waiters.add(waiter)
    waiter.check()
  })

export const notify = (owner) => {
  for (const waiter of [...owner.waiters]) waiter.check()
}

/** Serve `commands` ({name: async (msg) => reply fields}) over stdin/stdout until stdin
 * closes; then `shutdown()` and exit. `name` prefixes what goes to stderr. */
export const serve = (name, commands, shutdown) => {
  // Libraries log with console.log now and then: keep stdout for replies.
  console.log = console.error
  console.info = console.error
  const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
  const handleLine = async (line) => {
    if (!line.trim()) return
    let msg
    try {
      msg = JSON.parse(line)
    } catch (err) {
      console.error(`${name}: invalid JSON request: ${line.slice(0, 200)}`)
      reply({ id: null, ok: false, error: `invalid JSON: ${err.message}` })
      return
    }
    const id = msg?.id ?? null
    try {
      const handler = Object.hasOwn(commands, msg?.cmd) ? commands[msg.cmd] : null
      if (!handler) fail(`unknown command ${describe(msg?.cmd)}`)
      reply({ ...(await handler(msg)), id, ok: true })
    } catch (err) {
      if (!(err instanceof CommandError)) {
        console.error(`${name}: command ${describe(msg?.cmd)} (id ${id}) failed:`, err)
      }
      reply({ id, ok: false, error: err?.message ?? String(err) })
    }
  }
  process.on('uncaughtException', (err) => console.error(`${name}: uncaught exception:`, err))
  process.on('unhandledRejection', (err) => console.error(`${name}: unhandled rejection:`, err))
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
  rl.on('line', (line) => {
    handleLine(line)
  })
  rl.on('close', () => {
    shutdown()
    // Give the close frames a moment to leave, then exit.
    setTimeout(() => process.exit(0), 100).unref()
  })
}
