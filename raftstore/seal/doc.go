// Package seal is the encryption envelope every piece of user data passes
// through before it is proposed to Raft: zstd compression, then
// XChaCha20-Poly1305 with a random 24-byte nonce under a key chosen from a
// Keyring.
//
// A sealed value is
//
//	version(1) | flags(1) | key id(4) | nonce(24) | ciphertext+tag
//
// where flags say whether the plaintext was compressed and, for values of
// 32 KiB and more with base64 in them, whether its full base64 lines were
// first folded into the bytes they stand for (fold.go: mail's attachments
// compress far better and faster decoded). Its additional data binds the
// header, the object kind, the owner (a
// user or domain id) and the object id, so a ciphertext moved to another
// object, owner or kind fails to open. The key id lets keys rotate: old
// values open with old keys for as long as the keyring holds them.
//
// Invariant: Seal never returns plaintext bytes; Open never returns bytes
// that failed authentication.
package seal
