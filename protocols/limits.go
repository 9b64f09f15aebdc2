package protocols

// TraceHeadroom is the most that delivery adds to a message it accepted at
// the size limit (Return-Path, Received and the other header fields a
// receiving server stamps). A message stored through SMTP can be at most
// this much larger than the SMTP limit, so APPEND accepts the limit plus
// this (APPENDLIMIT): a client that moves mail between mailboxes, accounts
// or servers can upload again whatever was delivered.
const TraceHeadroom = 8 << 10

// AppendLimit is the largest message IMAP APPEND accepts when delivery
// accepts messages of up to maxMessage bytes.
func AppendLimit(maxMessage int64) int64 { return maxMessage + TraceHeadroom }
