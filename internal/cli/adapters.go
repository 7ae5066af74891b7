package cli

// The built-in agent adapters register themselves by kind.
import (
	_ "github.com/kurer/kurer/agent/adapter/folder"
	_ "github.com/kurer/kurer/agent/adapter/webhook"
)
