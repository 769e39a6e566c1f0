//! Chat sessions on SmolLM2: each turn processes only the tokens after what the cache
//! already holds, a full context drops the oldest turns but keeps the system prompt (and
//! its cached part), end-of-turn tokens and multi-token stop strings end a reply.

mod common;

use ember::chat::{ChatTemplate, TemplateOrigin};
use ember::runtime::generate::{Control, GenerateParams, StopReason};
use ember::{
    ChatParams, ChatSession, Context, ContextParams, Model, ModelParams, Sampler, SamplerParams,
};

fn smollm2() -> Model {
    Model::load(common::model("smollm2"), &ModelParams::default()).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerParams {
            temperature: 0.0,
            ..SamplerParams::default()
        },
        ..GenerateParams::default()
    }
}

fn session(model: &Model, n_ctx: usize) -> ChatSession {
    let cp = ContextParams {
        n_ctx,
        n_threads: 2,
        ..ContextParams::default()
    };
    ChatSession::new(model, cp, ChatParams::default()).unwrap()
}

/// The tokens of the conversation as the session renders it, computed independently.
fn expected_tokens(model: &Model, s: &ChatSession) -> Vec<u32> {
    let text = s.render(true).unwrap();
    model.tokenizer().encode(&text, false, true).unwrap()
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn each_turn_processes_only_the_new_tokens() {
    if !common::chat_model_tests() {
        return;
    }
    let model = smollm2();
    let mut s = session(&model, 2048);
    assert_eq!(s.template().origin(), &TemplateOrigin::Model);
    s.add_message(
        "system",
        "You are a helpful assistant. Answer in one sentence.",
    );
    let params = greedy(40);
    let mut sampler = Sampler::new(params.sampler.clone()).unwrap();
    for (turn, question) in [
        "What is the capital of France?",
        "And of Germany?",
        "Which one is larger?",
    ]
    .iter()
    .enumerate()
    {
        s.add_message("user", question);
        let cached = s.context().tokens().to_vec();
        let want = expected_tokens(&model, &s);
        let mut streamed = String::new();
        let st = s
            .reply(&params, &mut sampler, |p| {
                streamed.push_str(p);
                Control::Continue
            })
            .unwrap();
        assert_eq!(
            &s.context().tokens()[..st.prompt_tokens],
            &want[..],
            "turn {turn}: the prompt"
        );
        let lcp = common_prefix(&cached, &want);
        assert_eq!(st.prompt_reused, lcp, "turn {turn}");
        assert_eq!(st.prompt_processed, want.len() - lcp, "turn {turn}");
        // Everything the cache held (the previous prompt and reply) was reused.
        assert_eq!(
            lcp,
            cached.len(),
            "turn {turn}: the cache was not reused whole"
        );
        if turn > 0 {
            assert!(
                st.prompt_processed < 30,
                "turn {turn}: {} tokens processed",
                st.prompt_processed
            );
            assert!(st.prompt_reused > st.prompt_processed);
        }
        let reply = s.messages().last().unwrap();
        assert_eq!(reply["role"], "assistant");
        assert_eq!(reply["content"].as_str().unwrap(), streamed);
        assert!(
            !streamed.is_empty() && !streamed.contains("<|im_end|>"),
            "{streamed:?}"
        );
        eprintln!(
            "turn {turn}: {} prompt tokens, {} reused, {} processed, {} generated ({:?}): {streamed:?}",
            st.prompt_tokens, st.prompt_reused, st.prompt_processed, st.generated_tokens, st.stop_reason
        );
    }
    // The replies ended with SmolLM2's end-of-turn token <|im_end|>, not the token limit.
    let tok = model.tokenizer();
    assert!(tok.is_eog(tok.text_to_token(b"<|im_end|>").unwrap()));
}

#[test]
fn a_full_context_drops_old_turns_and_keeps_the_system_prompt() {
    if !common::chat_model_tests() {
        return;
    }
    let model = smollm2();
    let n_ctx = 192;
    let mut s = session(&model, n_ctx);
    let system = "You are a terse assistant who answers with a few words.";
    s.add_message("system", system);
    let sys_tokens = {
        let only_system = ember::chat::message("system", system);
        let text = s
            .template()
            .render(&[only_system], &Default::default())
            .unwrap();
        model.tokenizer().encode(&text, false, true).unwrap().len()
    };
    let params = greedy(24);
    let mut sampler = Sampler::new(params.sampler.clone()).unwrap();
    let mut dropped_at = None;
    // The fourth turn is the first that does not fit; the fifth drops again.
    for turn in 0..5 {
        s.add_message(
            "user",
            &format!("Question {turn}: name an animal that lives in the sea, and a colour."),
        );
        let before = s.context().tokens().to_vec();
        let st = s
            .reply(&params, &mut sampler, |_| Control::Continue)
            .unwrap();
        assert_eq!(st.prompt_processed, st.prompt_tokens - st.prompt_reused);
        assert!(st.prompt_tokens + st.generated_tokens <= n_ctx);
        assert_eq!(
            s.messages()[0]["content"],
            system,
            "the system prompt stays"
        );
        assert!(s
            .render(false)
            .unwrap()
            .starts_with(&format!("<|im_start|>system\n{system}")));
        if st.dropped_messages > 0 {
            dropped_at.get_or_insert(turn);
            // The system prompt's tokens were still in the cache and were not processed again.
            assert!(
                st.prompt_reused >= sys_tokens,
                "turn {turn}: reused {}",
                st.prompt_reused
            );
            assert_eq!(
                st.prompt_reused,
                common_prefix(&before, &s.context().tokens()[..st.prompt_tokens])
            );
        }
        eprintln!(
            "turn {turn}: {} messages, dropped {}, prompt {} (reused {}, processed {})",
            s.messages().len(),
            st.dropped_messages,
            st.prompt_tokens,
            st.prompt_reused,
            st.prompt_processed
        );
    }
    assert!(dropped_at.is_some(), "the context never filled");
}

#[test]
fn stop_strings_spanning_tokens_are_never_emitted() {
    if !common::chat_model_tests() {
        return;
    }
    let model = smollm2();
    let prompt = "<|im_start|>user\nList the days of the week.<|im_end|>\n<|im_start|>assistant\n";
    let cp = ContextParams {
        n_ctx: 512,
        n_threads: 2,
        ..ContextParams::default()
    };
    let run = |stop: Vec<String>| {
        let mut ctx = Context::new(&model, cp).unwrap();
        let mut pieces = Vec::new();
        let p = GenerateParams { stop, ..greedy(48) };
        let st = ctx
            .generate(prompt, &p, |piece| {
                pieces.push(piece.to_owned());
                Control::Continue
            })
            .unwrap();
        (pieces, st)
    };
    let (pieces, _) = run(vec![]);
    let full: String = pieces.concat();
    // A stop string from the middle of one piece to the middle of the one after next.
    let mut bounds = vec![0];
    for p in &pieces {
        bounds.push(bounds.last().unwrap() + p.len());
    }
    let i = (1..pieces.len() - 2)
        .find(|&i| {
            pieces[i].chars().count() >= 2 && pieces[i + 2].chars().count() >= 2 && bounds[i] > 8
        })
        .expect("pieces of two or more characters");
    let start = bounds[i] + pieces[i].chars().next().unwrap().len_utf8();
    let end = bounds[i + 2] + pieces[i + 2].chars().next().unwrap().len_utf8();
    let stop = full[start..end].to_owned();
    assert!(!full[..start].contains(&stop));
    let (got, st) = run(vec![stop.clone(), "never appears".into()]);
    assert_eq!(st.stop_reason, Some(StopReason::StopString));
    assert_eq!(got.concat(), full[..start], "stop {stop:?}");
    eprintln!(
        "stop {stop:?} over 3 tokens: output cut to {:?}",
        got.concat()
    );
}

#[test]
fn files_without_a_template_get_their_architectures() {
    if !common::chat_model_tests() {
        return;
    }
    let gemma = Model::load(common::model("gemma3"), &ModelParams::default()).unwrap();
    assert!(gemma.chat_template().is_none());
    let t = ChatTemplate::for_model(&gemma, None).unwrap();
    assert_eq!(t.origin(), &TemplateOrigin::Builtin("gemma"));
    let msgs = [
        ember::chat::message("system", " Be brief. "),
        ember::chat::message("user", "Hi!"),
        ember::chat::message("assistant", "Hello."),
        ember::chat::message("user", "Bye"),
    ];
    let opts = ember::chat::RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    // What llama.cpp's built-in "gemma" (llm_chat_apply_template) writes for these.
    assert_eq!(
        t.render(&msgs, &opts).unwrap(),
        "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
    let tok = gemma.tokenizer();
    assert!(tok.is_eog(tok.text_to_token(b"<end_of_turn>").unwrap()));
    let chatml = ChatTemplate::builtin("chatml", "", "").unwrap().unwrap();
    assert_eq!(
        chatml.render(&msgs[1..2], &opts).unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    let llama3 = ChatTemplate::builtin("llama3", "", "").unwrap().unwrap();
    assert_eq!(
        llama3.render(&msgs[..2], &opts).unwrap(),
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n\
         Hi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // A session on it renders and replies.
    let cp = ContextParams {
        n_ctx: 256,
        n_threads: 2,
        ..ContextParams::default()
    };
    let mut s = ChatSession::new(&gemma, cp, ChatParams::default()).unwrap();
    s.add_message("user", "Hello");
    let p = greedy(6);
    let mut sampler = Sampler::new(p.sampler.clone()).unwrap();
    let st = s.reply(&p, &mut sampler, |_| Control::Continue).unwrap();
    assert!(st.generated_tokens > 0);
    // The tokenizer adds Gemma's BOS (the built-in does not write it).
    assert_eq!(s.context().tokens()[0], tok.bos().unwrap());
}
