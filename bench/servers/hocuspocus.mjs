// Hocuspocus, as its README starts it: no extensions, documents in memory.
// Run by bench/launchers.py from .bench/servers (where `npm ci` installed @hocuspocus/server).
import { Server } from '@hocuspocus/server'

const port = Number(process.env.PORT)
const server = new Server({ port, address: process.env.HOST ?? '127.0.0.1', quiet: true })
await server.listen()
console.log(`hocuspocus listening on ${process.env.HOST ?? '127.0.0.1'}:${port}`)
