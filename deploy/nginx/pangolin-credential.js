// The decision cache's key holds this digest of the request's credential headers, never the
// credentials themselves (nginx writes each cache key into its cache file). Every copy of
// X-API-Key and Authorization counts, in order, so two requests share a cached decision only
// when they present exactly the same credentials.
function credential_digest(r) {
    var hash = require('crypto').createHash('sha256');
    var headers = r.rawHeadersIn;
    for (var i = 0; i < headers.length; i++) {
        var name = headers[i][0].toLowerCase();
        if (name === 'x-api-key' || name === 'authorization') {
            hash.update(name + ':' + headers[i][1] + '\n');
        }
    }
    return hash.digest('hex');
}

export default { credential_digest };
