module github.com/mailcluster/mailcluster

go 1.26.8

require (
	github.com/klauspost/compress v1.20.3
	golang.org/x/crypto v0.58.0
)

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
