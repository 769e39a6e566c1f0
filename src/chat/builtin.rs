//! Templates for files that carry none, written in Jinja so they render through the same
//! sandbox. Each reproduces the output of the llama.cpp built-in of the same name
//! (`llm_chat_apply_template` in src/llama-chat.cpp).
//!
//! llama.cpp itself, given a file without `tokenizer.chat_template`, renders ChatML
//! whatever the model (common_chat_templates_init). That prompt is made of tokens a Gemma
//! or Llama 3 vocabulary does not have, so ember picks the built-in that matches the
//! file's architecture and vocabulary, and ChatML (llama.cpp's choice) otherwise.

use crate::model::Model;

/// ChatML (llama.cpp "chatml"; the same source as llama.cpp's CHATML_TEMPLATE_SRC).
const CHATML: &str = "{%- for message in messages -%}
  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}";

/// llama.cpp "gemma": system messages are merged into the next user turn, "assistant" is
/// "model", contents are trimmed. BOS comes from the tokenizer, as in llama.cpp.
const GEMMA: &str = "{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {%- set ns.system = ns.system + message.content | trim -%}
  {%- else -%}
    {%- set role = 'model' if message.role == 'assistant' else message.role -%}
    {{- '<start_of_turn>' + role + '\\n' -}}
    {%- if ns.system and role != 'model' -%}
      {{- ns.system + '\\n\\n' -}}
      {%- set ns.system = '' -%}
    {%- endif -%}
    {{- message.content | trim + '<end_of_turn>\\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\\n' -}}
{%- endif -%}";

/// llama.cpp "llama3".
const LLAMA3: &str = "{%- for message in messages -%}
  {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{%- endif -%}";

/// Names and sources of the built-in templates.
pub(crate) const BUILTINS: [(&str, &str); 3] =
    [("chatml", CHATML), ("gemma", GEMMA), ("llama3", LLAMA3)];

/// The built-in for a model without a template: `(name, source)`.
pub(crate) fn for_model(model: &Model) -> (&'static str, &'static str) {
    let tok = model.tokenizer();
    let has = |s: &str| tok.text_to_token(s.as_bytes()).is_some();
    let arch = model.config().arch_name.as_str();
    let name = if arch.starts_with("gemma") && has("<start_of_turn>") && has("<end_of_turn>") {
        "gemma"
    } else if has("<|start_header_id|>") && has("<|end_header_id|>") && has("<|eot_id|>") {
        "llama3"
    } else {
        "chatml"
    };
    builtin(name).map_or(BUILTINS[0], |src| (name, src))
}

/// The source of a built-in template by name.
pub(crate) fn builtin(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
