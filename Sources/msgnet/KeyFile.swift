import MsgNetCore

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Identity key files: the libp2p protobuf `PrivateKey` encoding, written with mode 0600.
enum KeyFile {
    static func loadOrCreate(path: String) throws -> PrivateKey {
        let url = URL(fileURLWithPath: path)
        if let data = try? Data(contentsOf: url) {
            do {
                return try PrivateKey(marshaled: Array(data))
            } catch {
                throw KeyFileError("key file \(path) is not a libp2p private key: \(error)")
            }
        }
        let key = PrivateKey.generate()
        do {
            try Data(key.marshaled).write(to: url, options: .atomic)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        } catch {
            throw KeyFileError("cannot write key file \(path): \(error)")
        }
        return key
    }
}

struct KeyFileError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
