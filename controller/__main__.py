from controller.cli import main

if __name__ == "__main__":  # not when a spawned child (the demo's load) imports it again
    main()
