package envelope

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"io"
)

// Info describes an envelope as far as it can be read without a key.
type Info struct {
	// Profile is "gcm" or "fiks".
	Profile Profile `json:"profile"`
	// ContentType is authEnvelopedData or envelopedData.
	ContentType string `json:"content_type"`
	// Version is the CMS version of the (Auth)EnvelopedData.
	Version int64 `json:"version"`
	// ContentEncryption is aes256-GCM or aes256-CBC.
	ContentEncryption string `json:"content_encryption"`
	// IVSize is the GCM nonce or CBC IV length in bytes; TagSize the GCM tag length.
	IVSize  int `json:"iv_size"`
	TagSize int `json:"tag_size,omitempty"`
	// Recipients are the key transport recipients.
	Recipients []RecipientInfo `json:"recipients"`
	// OtherRecipients counts recipient infos of other kinds (not usable by kurer).
	OtherRecipients int `json:"other_recipients,omitempty"`
	// EncryptedSize is the size of the encrypted content in bytes.
	EncryptedSize int64 `json:"encrypted_size"`
	// EnvelopeSize is the size of the whole envelope in bytes.
	EnvelopeSize int64 `json:"envelope_size"`
}

// RecipientInfo identifies one recipient of an envelope.
type RecipientInfo struct {
	// Issuer and Serial (hex) identify the recipient certificate, or SKI (hex).
	Issuer        string `json:"issuer,omitempty"`
	Serial        string `json:"serial,omitempty"`
	SKI           string `json:"subject_key_id,omitempty"`
	KeyEncryption string `json:"key_encryption"`
	OAEPHash      string `json:"oaep_hash,omitempty"`
	MGF1Hash      string `json:"mgf1_hash,omitempty"`
	// EncryptedKeySize is the size of the encrypted content key in bytes.
	EncryptedKeySize int `json:"encrypted_key_size"`
}

// Inspect reads an envelope's structure without any key: recipients,
// algorithms and sizes. It reads r to the end and applies DefaultLimits.
func Inspect(r io.Reader) (*Info, error) {
	info, err := inspect(r, DefaultLimits())
	if err != nil {
		return nil, fmt.Errorf("inspect envelope: %w", err)
	}
	return info, nil
}

func inspect(r io.Reader, l Limits) (*Info, error) {
	cr := newCMSReader(r, l)
	head, err := cr.readHead()
	if err != nil {
		return nil, err
	}
	info := &Info{
		Profile:           ProfileFiks,
		ContentType:       oidName(head.ContentType),
		Version:           head.Version,
		ContentEncryption: oidName(head.Alg.OID),
		IVSize:            len(head.Alg.IV),
		OtherRecipients:   head.Other,
	}
	if head.auth() {
		info.Profile, info.TagSize = ProfileGCM, head.Alg.ICVLen
	}
	for _, rc := range head.Recipients {
		ri := RecipientInfo{KeyEncryption: oidName(rc.KeyAlg), EncryptedKeySize: len(rc.Encrypted)}
		if rc.KeyAlg.Equal(oidRSAESOAEP) {
			ri.OAEPHash, ri.MGF1Hash = oidName(rc.OAEPHash), oidName(rc.MGFHash)
		}
		if rc.SKI != nil {
			ri.SKI = hex.EncodeToString(rc.SKI)
		} else {
			var rdn pkix.RDNSequence
			if rest, err := asn1.Unmarshal(rc.Issuer, &rdn); err == nil && len(rest) == 0 {
				var n pkix.Name
				n.FillFromRDNSequence(&rdn)
				ri.Issuer = n.String()
			} else {
				ri.Issuer = hex.EncodeToString(rc.Issuer)
			}
			ri.Serial = hex.EncodeToString(rc.Serial.Bytes())
		}
		info.Recipients = append(info.Recipients, ri)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, err
	}
	info.EncryptedSize = cr.ctTotal
	if _, err := cr.readTail(); err != nil {
		return nil, err
	}
	info.EnvelopeSize = cr.b.pos
	return info, nil
}
