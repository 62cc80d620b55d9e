// js-libp2p 3 calls `Promise.withResolvers` (Node.js 22+). The machines that run this client
// have Node.js 20, so supply the standard method where it is missing. Imported first, before
// any libp2p module is evaluated.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
