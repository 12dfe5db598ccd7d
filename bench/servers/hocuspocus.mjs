// Hocuspocus, as its README starts it: documents in memory. With REDIS_HOST set, it also runs
// @hocuspocus/extension-redis, the extension Hocuspocus documents for running several instances:
// every instance started with the same REDIS_PREFIX relays its documents' changes to the others
// through Redis pub/sub (the bench gives each run a prefix of its own).
// Run by bench/launchers.py from .bench/servers (where `npm ci` installed the packages).
//
//   PORT=1234 [HOST=127.0.0.1] [REDIS_HOST=127.0.0.1 REDIS_PORT=6379 REDIS_DB=0 REDIS_PREFIX=…]
//     node hocuspocus.mjs
import { Server } from '@hocuspocus/server'

const port = Number(process.env.PORT)
const address = process.env.HOST ?? '127.0.0.1'
const extensions = []
let redis = null

if (process.env.REDIS_HOST) {
  const { Redis } = await import('@hocuspocus/extension-redis')
  redis = new Redis({
    host: process.env.REDIS_HOST,
    port: Number(process.env.REDIS_PORT ?? 6379),
    prefix: process.env.REDIS_PREFIX ?? 'hocuspocus',
    options: { db: Number(process.env.REDIS_DB ?? 0) }
  })
  extensions.push(redis)
  // Listen only once both of the extension's connections are up, so that the first client of a
  // run does not wait for them.
  const ready = (client) =>
    client.status === 'ready'
      ? Promise.resolve()
      : new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('Redis did not answer within 10 s')), 10_000)
        client.once('ready', () => {
          clearTimeout(timer)
          resolve()
        })
      })
  await Promise.all([ready(redis.pub), ready(redis.sub)])
}

const server = new Server({ port, address, quiet: true, extensions })
await server.listen()
const via = redis ? ` with Redis ${process.env.REDIS_HOST}:${process.env.REDIS_PORT ?? 6379} prefix ${redis.configuration.prefix}` : ''
console.log(`hocuspocus listening on ${address}:${port}${via}`)
